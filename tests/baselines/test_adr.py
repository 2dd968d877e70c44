"""The ADR baseline: losses by hand, shapes, eval-mode batch norm, learning on synthetic
x-vectors, checkpoints and input errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from optin.baselines.adr import (
    ADR,
    ADR_PRESETS,
    ADRConfig,
    ADRDecoder,
    ADRDiscriminator,
    ADREncoder,
    ADRInputError,
    adr_losses,
    adr_preset,
    load_adr,
    save_adr,
)
from optin.baselines.adr_training import train_adr
from optin.checkpoint import CheckpointError, read_config, save_checkpoint

DIM = 512


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_xvectors(seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """L2-normalised fake x-vectors: a random direction per speaker, plus a shared gender
    direction with a sign and a per-speaker strength, plus noise.

    Splits have disjoint speakers (as VoxCeleb's): train 80 x 2, valid 20 x 2, test 40 x 4.
    Each split is (x (N, 512), gender (N,) in {0, 1}, speaker (N,)).
    """
    g = torch.Generator().manual_seed(seed)
    gender_dir = F.normalize(torch.randn(DIM, generator=g), dim=0)
    sizes = {"train": (80, 2), "valid": (20, 2), "test": (40, 4)}
    total = sum(n for n, _ in sizes.values())
    speaker_dir = F.normalize(torch.randn(total, DIM, generator=g), dim=1)
    gender = torch.arange(total) % 2
    strength = (2 * gender - 1) * (0.5 + 0.2 * torch.randn(total, generator=g))
    out, first = {}, 0
    for name, (speakers, per) in sizes.items():
        ids = torch.arange(first, first + speakers).repeat_interleave(per)
        first += speakers
        along = strength[ids] + 0.1 * torch.randn(len(ids), generator=g)
        x = speaker_dir[ids] + along[:, None] * gender_dir
        x = x + 0.6 * torch.randn(len(ids), DIM, generator=g) / math.sqrt(DIM)
        out[name] = (F.normalize(x, dim=1), gender[ids].float(), ids)
    return out


def logistic_attacker(x: torch.Tensor, y: torch.Tensor):
    """Logistic regression (L-BFGS, small L2); returns a 0/1 predictor."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda v: ((v @ w + b) > 0).float().detach()


def speaker_accuracy(x: torch.Tensor, speaker: torch.Tensor, enrol: int = 2) -> float:
    """Cosine nearest centroid: the first ``enrol`` vectors of each speaker enrol it, the
    others are identified among all speakers of the set."""
    ids = speaker.unique()
    centroids, probes, truth = [], [], []
    for k in ids:
        rows = x[speaker == k]
        centroids.append(rows[:enrol].mean(0))
        probes.append(rows[enrol:])
        truth += [k] * (len(rows) - enrol)
    scores = F.normalize(torch.cat(probes), dim=1) @ F.normalize(torch.stack(centroids), dim=1).T
    return float((ids[scores.argmax(1)] == torch.stack(truth)).float().mean())


@pytest.fixture(scope="module")
def data():
    return synthetic_xvectors()


@pytest.fixture(scope="module")
def trained(data):
    lines: list[str] = []
    x, gender, _ = data["train"]
    model, history = train_adr(x, gender, adr_preset("quick"), valid=data["valid"][:2],
                               log=lines.append, attribute_name="gender",
                               class_names=("f", "m"))
    return model, history, lines


# ---------------------------------------------------------------------- losses
def test_adr_losses_by_hand():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    x_hat = torch.tensor([[4.0, 3.0], [1.0, 1.0]])
    pred = torch.tensor([[0.8], [0.3]])
    attribute = torch.tensor([1.0, 0.0])
    cosines = [(3 * 4 + 4 * 3) / (5 * 5), 1 / math.sqrt(2)]
    expected = {
        "reconstruction": ((1 - cosines[0]) + (1 - cosines[1])) / 2,
        # BCE(p, y) = -[y log p + (1 - y) log(1 - p)]
        "adversary": -(math.log(0.8) + math.log(1 - 0.3)) / 2,
        # label flip: BCE(1 - p, y) with 1 - p = 0.2, 0.7
        "flipped": -(math.log(0.2) + math.log(1 - 0.7)) / 2,
    }
    losses = adr_losses(x, x_hat, pred, attribute)
    logits = torch.log(pred / (1 - pred))
    from_logits = adr_losses(x, x_hat, logits, attribute, logits=True)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-6), key
        assert from_logits[key].item() == pytest.approx(value, rel=1e-5), key


# ---------------------------------------------------------------------- shapes
def test_shapes_and_unit_norm():
    x = F.normalize(torch.randn(6, DIM), dim=1)
    z = ADREncoder()(x)
    assert z.shape == (6, 128)
    out = ADRDecoder()(z, torch.full((6, 1), 0.3))
    assert out.shape == (6, DIM)
    assert torch.allclose(out.norm(dim=1), torch.ones(6), atol=1e-5)
    pred = ADRDiscriminator()(z)
    assert pred.shape == (6, 1) and bool(((pred > 0) & (pred < 1)).all())
    model = ADR(ADRConfig())
    protected = model.transform(3 * x)  # any scale: x-vectors are L2-normalised first
    assert protected.shape == (6, DIM)
    assert torch.allclose(protected.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(protected, model.transform(x, 0.5), atol=1e-6)
    per_row = model.transform(x, torch.linspace(0, 1, 6))
    assert per_row.shape == (6, DIM)
    with pytest.raises(ADRInputError, match=r"x must have shape \(N, 512\)"):
        model.transform(torch.randn(4, 100))
    with pytest.raises(ADRInputError, match="one code per row"):
        model.transform(x, torch.zeros(4))


def test_transform_uses_batchnorm_running_statistics(trained, data):
    model = trained[0]
    x = data["test"][0]
    model.train()
    try:
        batch = model.transform(x)
        single = model.transform(x[:1])  # a batch of one would fail in training-mode BN
        assert torch.allclose(batch[:1], single, atol=1e-6)
        assert model.training  # mode restored
    finally:
        model.eval()
    bn = model.encoder.net[2]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    h = torch.relu(model.encoder.net[0](x))
    z = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    by_hand = F.normalize(torch.tanh(model.decoder.linear(
        torch.cat([z, torch.full((len(x), 1), 0.5)], dim=1))), dim=1)
    assert torch.allclose(batch, by_hand, atol=1e-5)


# ---------------------------------------------------------------------- learning
def test_quick_preset_hides_gender_from_ignorant_attacker_and_keeps_speakers(trained, data):
    model, history, _ = trained
    x_train, g_train, _ = data["train"]
    x_test, g_test, s_test = data["test"]
    protected_test = model.transform(x_test)

    ignorant = logistic_attacker(x_train, g_train)
    informed = logistic_attacker(model.transform(x_train), g_train)
    original = float((ignorant(x_test) == g_test).float().mean())
    ignorant_acc = float((ignorant(protected_test) == g_test).float().mean())
    informed_acc = float((informed(protected_test) == g_test).float().mean())
    speakers = speaker_accuracy(protected_test, s_test)
    speakers_original = speaker_accuracy(x_test, s_test)
    # the decoder learned to take the attribute from w: w = 0 / 1 give all-f / all-m output
    as_f = float((ignorant(model.transform(x_test, 0.0)) == 0).float().mean())
    as_m = float((ignorant(model.transform(x_test, 1.0)) == 1).float().mean())
    cos = float(F.cosine_similarity(model.reconstruct(x_test), x_test).mean())
    print(f"gender: original {original:.3f}, ignorant {ignorant_acc:.3f}, informed "
          f"{informed_acc:.3f}; speaker: original {speakers_original:.3f}, protected "
          f"{speakers:.3f} (chance {1 / 40:.3f}); w=0 -> f {as_f:.3f}, w=1 -> m {as_m:.3f}; "
          f"reconstruction cosine {cos:.3f}; kept epoch {history['selected_epoch']}; "
          f"{history['reason']}")

    assert history["converged"], history["reason"]
    assert original >= 0.9  # the data does carry gender
    assert abs(ignorant_acc - 0.5) <= 0.15
    assert speakers >= 0.8
    assert as_f >= 0.9 and as_m >= 0.9
    assert cos >= 0.4


def test_history_logs_every_loss_per_epoch(trained):
    _, history, lines = trained
    config = adr_preset("quick")
    assert len(history["epochs"]) == config.epochs + 1
    assert len(history["classifier"]) == config.classifier_epochs
    row = history["epochs"][-1]
    for key in ("train_reconstruction", "train_adversary", "train_flipped",
                "train_adversary_accuracy", "sel_reconstruction", "sel_adversary",
                "sel_flipped", "sel_adversary_balanced_accuracy", "sel_probe_balanced_accuracy",
                "sel_protected_classifier_balanced_accuracy", "classifier_accuracy"):
        assert math.isfinite(row[key]), key
    assert history["classifier_accuracy"] >= 0.9
    assert 1 <= history["selected_epoch"] <= config.epochs
    assert isinstance(history["converged"], bool) and history["reason"]
    assert history["selection_data"] == "validation"
    assert sum(line.startswith("ADR epoch") for line in lines) == config.epochs
    assert sum(line.startswith("classifier epoch") for line in lines) == config.classifier_epochs
    assert "flipped" in lines[-2] and "kept epoch" in lines[-1]


def test_paper_preset_reports_no_convergence_on_a_small_corpus(data):
    x, gender, _ = data["train"]
    _, history = train_adr(x, gender, adr_preset("paper", epochs=10), valid=data["valid"][:2])
    assert not history["converged"]
    assert "short of the 25% drop asked" in history["reason"]


def test_divergence_stops_training_and_keeps_the_last_finite_weights(data):
    x, gender, _ = data["train"]
    config = adr_preset("quick", epochs=4, classifier_epochs=2, lr=1e3, adversary_lr=1e3)
    model, history = train_adr(x, gender, config, valid=data["valid"][:2])
    assert not history["converged"] and "NaN or infinite at epoch 1" in history["reason"]
    assert len(history["epochs"]) == 2 and history["selected_epoch"] == 0
    assert bool(torch.isfinite(model.transform(data["test"][0])).all())


def test_training_is_deterministic_and_leaves_the_global_rng_alone(data):
    x, gender, _ = data["train"]
    config = adr_preset("quick", epochs=2, classifier_epochs=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first, history_a = train_adr(x, gender, config)
    assert torch.equal(torch.rand(3), expected)
    second, history_b = train_adr(x, gender, config)
    assert history_a["epochs"] == history_b["epochs"]
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    other, _ = train_adr(x, gender, adr_preset("quick", epochs=2, classifier_epochs=2, seed=1))
    assert not torch.equal(other.encoder.net[0].weight, first.encoder.net[0].weight)
    assert history_a["selection_data"] == "training"


# ---------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_gives_identical_transform(trained, data, tmp_path):
    model, history, _ = trained
    save_adr(model, tmp_path / "adr", {"history": history["epochs"][:2],
                                       "converged": history["converged"]})
    loaded = load_adr(tmp_path / "adr")
    x = data["test"][0]
    assert torch.equal(loaded.transform(x), model.transform(x))
    assert torch.equal(loaded.transform(x, 0.0), model.transform(x, 0.0))
    assert loaded.config == model.config
    assert loaded.attribute == "gender" and loaded.class_names == ("f", "m")
    config = read_config(tmp_path / "adr")
    assert config["kind"] == "adr" and config["info"]["history"][0]["train_reconstruction"] is None
    save_checkpoint(tmp_path / "other", {"w": torch.zeros(1)}, {"kind": "x", "architecture": {}})
    with pytest.raises(CheckpointError, match="expected 'adr'"):
        load_adr(tmp_path / "other")


# ---------------------------------------------------------------------- input errors
def test_non_binary_attribute_is_refused_with_its_name_and_values(data):
    x = data["train"][0][:6]
    config = adr_preset("quick", epochs=1, classifier_epochs=1)
    with pytest.raises(ADRInputError, match=r"'emotion'.*found 3 distinct value\(s\): 0, 1, 2"):
        train_adr(x, [0, 1, 2, 0, 1, 2], config, attribute_name="emotion")
    with pytest.raises(ADRInputError, match=r"'gender'.*'f'.*'m'"):
        train_adr(x, ["f", "m", "f", "m", "f", "m"], config, attribute_name="gender")
    with pytest.raises(ADRInputError, match=r"'f' -> 0, 'm' -> 1.*0\.5"):
        train_adr(x, [0, 1, 0.5, 0, 1, 0], config, attribute_name="gender",
                  class_names=("f", "m"))
    with pytest.raises(ADRInputError, match="never takes the value 'm'"):
        train_adr(x, [0] * 6, config, attribute_name="gender", class_names=("f", "m"))
    with pytest.raises(ADRInputError, match="has 6 rows but attribute 'gender' has 5"):
        train_adr(x, [0, 1, 0, 1, 0], config, attribute_name="gender")
    with pytest.raises(ADRInputError, match="valid"):
        train_adr(x, [0, 1] * 3, config, valid=(x[:, :100], [0, 1] * 3))


def test_config_round_trip_presets_and_validation():
    config = adr_preset("quick", seed=3)
    assert ADRConfig.from_dict(config.to_dict()) == config
    assert config.run_settings() == config.to_dict()
    paper = adr_preset("paper")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum) == (100, 64, 1e-4, 0.9)
    assert (paper.classifier_epochs, paper.classifier_lr, paper.classifier_momentum) == (
        15, 1e-3, 0.9)
    assert paper.effective_adversary_lr == 1e-4 and paper.adversarial_weight == 1.0
    assert (paper.latent_dim, paper.inference_w, paper.reference_gradient) == (128, 0.5, False)
    assert set(ADR_PRESETS) == {"paper", "quick"}
    with pytest.raises(ADRInputError, match=r"unknown ADRConfig setting.*bogus"):
        ADRConfig.from_dict({"bogus": 1})
    with pytest.raises(ADRInputError, match=r"ADRConfig\.lr"):
        ADRConfig(lr=-1.0)
    with pytest.raises(ADRInputError, match=r"ADRConfig\.inference_w"):
        ADRConfig(inference_w=2.0)
    with pytest.raises(ValueError, match="unknown preset"):
        adr_preset("huge")
