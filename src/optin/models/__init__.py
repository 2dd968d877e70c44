"""Networks as plain ``nn.Module`` files: each holds its module and its config dataclass."""

from optin.models.causal_obfuscator import CausalObfuscator, CausalObfuscatorConfig
from optin.models.cyclegan_vc2 import Generator, GeneratorConfig
from optin.models.deepspeech2 import (
    BatchRNN,
    DeepSpeech2Classifier,
    DeepSpeech2Config,
    MaskConv,
    SequenceWise,
    conv_output_freq,
    conv_output_length,
    utterance_posteriors,
    vote,
)

__all__ = [
    "BatchRNN",
    "CausalObfuscator",
    "CausalObfuscatorConfig",
    "DeepSpeech2Classifier",
    "DeepSpeech2Config",
    "Generator",
    "GeneratorConfig",
    "MaskConv",
    "SequenceWise",
    "conv_output_freq",
    "conv_output_length",
    "utterance_posteriors",
    "vote",
]
