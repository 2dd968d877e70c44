"""Tests for ``optin anonymize`` outputs (optin.baselines.anonymize): never over an input."""

from __future__ import annotations

import hashlib

import pytest
from tests.conftest import write_tiny_corpus

from optin.baselines.anonymize import anonymize_inputs
from optin.corpora.manifest import Manifest
from optin.files import OutputError


def digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_over_inputs_are_refused_and_nothing_changes(tmp_path):
    csv = write_tiny_corpus(tmp_path / "corpus")
    wav = tmp_path / "corpus" / "wav" / "utt 0.wav"
    before = digests(tmp_path)
    with pytest.raises(OutputError) as info:
        anonymize_inputs([wav], wav.parent, progress=False)
    assert str(info.value) == (f"the output {wav} would overwrite the input {wav}; choose "
                               "another --out-dir")
    with pytest.raises(OutputError, match=rf"manifest\.csv would overwrite the input {csv}"):
        anonymize_inputs([csv], csv.parent, progress=False)
    assert digests(tmp_path) == before  # nothing written, not even the settings record
    # a corpus whose audio sits where the anonymized copy would go (OUT/audio/<id>.wav)
    manifest = Manifest.read(csv)
    rows = [dict(r, id=r["id"].replace(" ", "_")) for r in manifest.rows]
    audio = tmp_path / "other" / "audio"
    audio.mkdir(parents=True)
    for row in rows:
        target = audio / f"{row['id']}.wav"
        target.write_bytes(manifest.audio_path(row).read_bytes())
        row["path"] = str(target)
    other = Manifest(rows=rows, root=tmp_path / "other").write(tmp_path / "other" / "m.csv")
    before = digests(tmp_path)
    with pytest.raises(OutputError, match=r"other/audio/utt_0\.wav would overwrite the input"):
        anonymize_inputs([other], tmp_path / "other", progress=False)
    assert digests(tmp_path) == before
