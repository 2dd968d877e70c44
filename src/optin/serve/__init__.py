"""``optin serve``: a local web page to hear, see and test a run's protection.

:mod:`~optin.serve.run_folder` opens a run and loads its models, :mod:`~optin.serve.analysis`
puts one utterance through every system, :mod:`~optin.serve.uploads` takes uploads in safely,
:mod:`~optin.serve.live` streams the microphone, :mod:`~optin.serve.spectrogram_png` draws,
:mod:`~optin.serve.guard` lets only the page itself in (its host names, its origin), and
:mod:`~optin.serve.web` is the thin HTTP layer over them.
"""
