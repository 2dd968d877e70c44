"""The report: results.json checked and merged, tables formatted, paper-style figures drawn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from optin.evaluation.figures import make_figure, make_merged_figure, plot_experiment
from optin.evaluation.report import build_report, write_report
from optin.evaluation.results import SCHEMA, ResultsError, format_stat, load_results

# per system: T (original, obfuscated, agreement) and per attribute
# (chance, original, ignorant, informed, output_only, excess_leakage)
TARGET = {"opt-in": (0.981, 0.952, 0.940), "adr": (0.981, 0.965, 0.950)}
ATTACKS = {
    "opt-in": {"gender": (0.5, 0.970, 0.510, 0.620, 0.580, 0.040),
               "emotion": (0.2, 0.850, 0.210, 0.300, 0.250, 0.050)},
    "adr": {"gender": (0.5, 0.970, 0.520, 0.680, 0.590, 0.090),
            "emotion": (0.2, 0.850, 0.220, 0.730, 0.260, 0.470)},
}
STD = 0.013
STAT_KEYS = ("chance", "original", "ignorant", "informed", "output_only", "excess_leakage")


def stat(mean: float, seeds: int, std: float = STD) -> dict[str, Any]:
    if seeds == 1:
        return {"mean": mean, "std": 0.0, "values": [mean]}
    return {"mean": mean, "std": std, "values": [mean - std, mean, mean + std][:seeds]}


def experiment(name: str = "builtin-fig3a", seeds: int = 1,
               attacked: tuple[str, ...] = ("gender",), figure: str | None = "3a",
               corpus: str = "builtin") -> dict[str, Any]:
    systems = {}
    for key, label in (("opt-in", "opt-in obfuscator"), ("adr", "ADR (opt-out)")):
        systems[key] = {
            "label": label,
            "target": {k: stat(v, seeds) for k, v in
                       zip(("original", "obfuscated", "agreement"), TARGET[key], strict=True)},
            "attacks": {a: {k: stat(v, seeds, 0.0 if k == "chance" else STD)
                            for k, v in zip(STAT_KEYS, ATTACKS[key][a], strict=True)}
                        for a in attacked},
            "extra_key_from_the_future": {"ignored": True},
        }
    return {
        "name": name, "title": f"Built-in corpus: permit speaker, attack {' and '.join(attacked)}",
        "figure": figure, "corpus": corpus, "manifest": "/data/m.csv",
        "manifest_fingerprint": "sha256:0", "protocol": "same-speakers", "permitted": "speaker",
        "attacked": list(attacked), "preset": "quick", "seeds": list(range(seeds)),
        "wall_seconds": 812.4, "systems": systems,
    }


def results(*experiments: dict[str, Any]) -> dict[str, Any]:
    rows = [{"experiment": e["name"], "corpus": e["corpus"], "split": "test",
             "system": "opt-in", "attacker": "informed", "attribute": e["attacked"][0],
             "metric": "accuracy", "seed": s, "value": 0.62} for e in experiments
            for s in e["seeds"]]
    return {"schema": SCHEMA, "created": "2026-11-27T14:00:00+00:00", "code_version": "0.1.0",
            "experiments": list(experiments), "rows": rows}


def write(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def by_gid(fig, gid: str, ax_index: int = 0):
    found = [a for a in fig.axes[ax_index].get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def test_format_stat():
    assert format_stat({"mean": 0.5123, "std": 0.0131, "values": [0.5, 0.51, 0.52]}) \
        == "0.512 ± 0.013"
    assert format_stat({"mean": 0.5123, "std": 0.0, "values": [0.5123]}) == "0.512"
    assert format_stat(None) == "n/a"
    assert format_stat({"mean": 0.5, "std": 0.1}, seeds=3) == "0.500 ± 0.100"


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.update(schema="optin-results/0"), "schema is 'optin-results/0'"),
    (lambda d: d.pop("experiments"), "'experiments' is missing"),
    (lambda d: d["experiments"][0]["systems"]["opt-in"]["attacks"]["gender"]["informed"]
     .pop("mean"), "systems['opt-in'].attacks['gender'].informed: STAT without 'mean'"),
    (lambda d: d["experiments"][0]["systems"]["adr"]["target"].update(original={"mean": "x"}),
     "systems['adr'].target.original.mean"),
    (lambda d: d["experiments"][0].update(attacked=["gender", "emotion", "speaker", "age"]),
     "experiments[0] ('builtin-fig3a').attacked"),
    (lambda d: d["experiments"].append(d["experiments"][0]), "'builtin-fig3a' is not unique"),
])
def test_schema_errors_name_file_and_field(tmp_path, change, message):
    data = results(experiment())
    change(data)
    folder = write(tmp_path / "run", data)
    with pytest.raises(ResultsError, match=r"results\.json") as err:
        load_results([folder])
    assert message in str(err.value)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ResultsError, match=r"no results\.json"):
        load_results([tmp_path])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_results([tmp_path / "results.json"])


def test_report_tables_and_links(tmp_path):
    three = experiment("builtin-fig3a", seeds=3)
    one = experiment("emovdb-fig4", seeds=1, attacked=("gender", "emotion"), figure="4",
                     corpus="emovdb")
    one["systems"]["mcadams"] = {"label": "McAdams", "target": None, "attacks": {
        "gender": {"chance": stat(0.5, 1), "ignorant": stat(0.55, 1)}}}
    report = write_report(results(three, one), tmp_path / "out")
    text = report.read_text()
    assert report == tmp_path / "out" / "report.md"
    assert "synthetic" in text.lower()
    assert "## builtin-fig3a: Built-in corpus: permit speaker, attack gender" in text
    assert ("corpus `builtin` · protocol `same-speakers` · permitted `speaker` · "
            "attacked `gender` · preset `quick` · seeds 0, 1, 2 · wall time 13 min 32 s") in text
    assert "| system | T original | T obfuscated | agreement |" in text
    assert ("| opt-in obfuscator (`opt-in`) | 0.981 ± 0.013 | 0.952 ± 0.013 | 0.940 ± 0.013 |"
            in text)
    assert ("| system | chance | original | ignorant | informed | output-only | excess leakage |"
            in text)
    assert ("| ADR (opt-out) (`adr`) | 0.500 ± 0.000 | 0.970 ± 0.013 | 0.520 ± 0.013 | "
            "0.680 ± 0.013 | 0.590 ± 0.013 | 0.090 ± 0.013 |") in text
    # one seed: plain numbers; null or missing: n/a
    assert "| opt-in obfuscator (`opt-in`) | 0.981 | 0.952 | 0.940 |" in text
    assert "| ADR (opt-out) (`adr`) | 0.2 | 0.85" not in text
    assert "| ADR (opt-out) (`adr`) | 0.200 | 0.850 | 0.220 | 0.730 | 0.260 | 0.470 |" in text
    assert "| McAdams (`mcadams`) | n/a | n/a | n/a |" in text
    assert "| McAdams (`mcadams`) | 0.500 | n/a | 0.550 | n/a | n/a | n/a |" in text
    assert "| McAdams (`mcadams`) | n/a | n/a | n/a | n/a | n/a | n/a |" in text  # emotion
    for name in ("builtin-fig3a", "emovdb-fig4"):
        assert f"](figures/{name}.png)" in text
        for ext in ("png", "svg"):
            assert (tmp_path / "out" / "figures" / f"{name}.{ext}").stat().st_size > 0


def test_figure_files(tmp_path):
    paths = plot_experiment(experiment(seeds=3), tmp_path / "figs" / "fig3a")
    assert paths == [tmp_path / "figs" / "fig3a.png", tmp_path / "figs" / "fig3a.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    image = imread(paths[0])
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    svg = paths[1].read_text()
    assert 'id="opt-in/informed"' in svg and 'id="chance/gender"' in svg


@pytest.mark.parametrize("seeds", [1, 3])
def test_figure3_markers_lines_and_error_bars(seeds):
    fig = make_figure(experiment(seeds=seeds))
    ax = fig.axes[0]
    for key in ("opt-in", "adr"):
        t_orig, t_obf, _ = TARGET[key]
        _, orig, ignorant, informed, output_only, _ = ATTACKS[key]["gender"]
        for attacker, marker, xy in (("original", "o", (orig, t_orig)),
                                     ("ignorant", "s", (ignorant, t_obf)),
                                     ("informed", "*", (informed, t_obf)),
                                     ("output_only", "x", (output_only, t_obf))):
            line = by_gid(fig, f"{key}/{attacker}")
            assert line.get_marker() == marker
            assert tuple(line.get_xydata()[0]) == pytest.approx(xy)
        colours = {by_gid(fig, f"{key}/{a}").get_color() for a in ("original", "informed")}
        assert len(colours) == 1
    assert by_gid(fig, "opt-in/informed").get_color() != by_gid(fig, "adr/informed").get_color()
    chance = by_gid(fig, "chance/gender")
    assert chance.get_linestyle() == "--" and list(chance.get_xdata()) == [0.5, 0.5]
    target = by_gid(fig, "target-original")
    assert target.get_linestyle() == "--" and list(target.get_ydata()) == [0.981, 0.981]
    bars = [c for c in ax.collections if (c.get_gid() or "").endswith("/errorbar")]
    assert len(bars) == (2 * 4 * 2 if seeds > 1 else 0)  # systems x attackers x (x, y)
    assert ax.get_xlabel() == "gender attacker accuracy"
    assert ax.get_ylabel() == "speaker (target task) accuracy"
    assert ax.get_title().splitlines()[0] == "Built-in corpus: permit speaker, attack gender"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"original (no protection)", "ignorant attacker", "informed attacker",
            "opt-in obfuscator", "ADR (opt-out)"} <= set(labels)


def test_figure4_two_attributes():
    fig = make_figure(experiment("emovdb-fig4", seeds=3, attacked=("gender", "emotion"),
                                 figure="4"))
    ax = fig.axes[0]
    for key in ("opt-in", "adr"):
        gender, emotion = ATTACKS[key]["gender"], ATTACKS[key]["emotion"]
        for i, (attacker, marker) in enumerate((("original", "o"), ("ignorant", "s"),
                                                ("informed", "*")), start=1):
            line = by_gid(fig, f"{key}/{attacker}")
            assert line.get_marker() == marker
            assert tuple(line.get_xydata()[0]) == pytest.approx((gender[i], emotion[i]))
    assert list(by_gid(fig, "chance/gender").get_xdata()) == [0.5, 0.5]
    emotion_chance = by_gid(fig, "chance/emotion")
    assert emotion_chance.get_linestyle() == "--"
    assert list(emotion_chance.get_ydata()) == [0.2, 0.2]
    assert not [a for a in ax.get_children() if a.get_gid() == "target-original"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("gender attacker accuracy",
                                                  "emotion attacker accuracy")


def test_disagreeing_chance_and_missing_target():
    exp = experiment()
    exp["systems"]["adr"]["attacks"]["gender"]["chance"] = stat(0.55, 1)
    exp["systems"]["adr"]["target"] = None
    fig = make_figure(exp)
    assert list(by_gid(fig, "chance/gender/opt-in").get_xdata()) == [0.5, 0.5]
    assert list(by_gid(fig, "chance/gender/adr").get_xdata()) == [0.55, 0.55]
    assert list(by_gid(fig, "target-original").get_ydata()) == [0.981, 0.981]
    gids = {a.get_gid() for a in fig.axes[0].get_children()}
    assert "opt-in/informed" in gids and not any(str(g).startswith("adr/") for g in gids)


def test_merge_two_runs_with_a_name_clash(tmp_path):
    first = write(tmp_path / "run1", results(experiment(seeds=1)))
    second = write(tmp_path / "run2", results(experiment(seeds=3),
                                              experiment("builtin-fig3b", figure="3b")))
    merged = load_results([first, second / "results.json"])
    names = [e["name"] for e in merged["experiments"]]
    assert names == ["builtin-fig3a", "builtin-fig3a@run2", "builtin-fig3b"]
    assert len(merged["warnings"]) == 1 and "builtin-fig3a@run2" in merged["warnings"][0]
    assert [s["path"] for s in merged["sources"]] == [str(first / "results.json"),
                                                      str(second / "results.json")]
    assert {r["experiment"] for r in merged["rows"]} == set(names)
    assert merged["experiments"][1]["source"] == str(second / "results.json")

    report = build_report([first, second], tmp_path / "report")
    text = report.read_text()
    assert "## builtin-fig3a@run2: " in text and "](figures/builtin-fig3a-run2.png)" in text
    assert "](figures/figure-3a.png)" in text  # both runs of figure 3a in one figure
    assert "](figures/figure-3b.png)" not in text
    assert (tmp_path / "report" / "figures" / "figure-3a.svg").stat().st_size > 0

    fig = make_merged_figure(merged["experiments"][:2])
    assert len(fig.axes) == 2 and len(fig.legends) == 1
    assert by_gid(fig, "opt-in/informed", ax_index=1).get_marker() == "*"


def test_markers_on_the_same_spot_are_spread_apart_without_moving_their_data():
    exp = experiment()
    exp["systems"]["adr"]["attacks"]["gender"]["original"] = stat(0.970, 1)  # = opt-in's
    fig = make_figure(exp)
    fig.canvas.draw()
    a, b = by_gid(fig, "opt-in/original"), by_gid(fig, "adr/original")
    assert list(a.get_xdata()) == list(b.get_xdata()) == [0.970]  # data stay exact
    xa = a.get_transform().transform((0.970, 0.981))[0]
    xb = b.get_transform().transform((0.970, 0.981))[0]
    assert abs(xa - xb) > 3  # pixels apart on the canvas
    lone = by_gid(fig, "opt-in/informed")  # a spot of its own is not shifted
    ax = fig.axes[0]
    assert lone.get_transform().transform((0.62, 0.952))[0] == pytest.approx(
        ax.transData.transform((0.62, 0.952))[0])


def _with_sweep(exp: dict[str, Any]) -> dict[str, Any]:
    """Add two opt-in variants of a lambda_p sweep and family details to an experiment."""
    base = exp["systems"]["opt-in"]
    base["options"] = {"lambda_p": 1.0}
    for value, (agree, informed) in ((0.3, (0.99, 0.80)), (3.0, (0.90, 0.55))):
        variant = json.loads(json.dumps(base))
        variant["label"] = f"opt-in obfuscator (lambda_p={value})"
        variant["sweep"] = {"lambda_p": value}
        variant["target"]["agreement"] = stat(agree, 1)
        for attack in variant["attacks"].values():
            attack["informed"] = stat(informed, 1)
        exp["systems"][f"opt-in@lambda_p={value}"] = variant
    attack = base["attacks"]["gender"]
    attack["strongest_informed"] = ["xvector"]
    attack["families"] = {
        "deepspeech2": {"original": stat(0.97, 1), "ignorant": stat(0.51, 1),
                        "informed": stat(0.60, 1), "undertrained": [False],
                        "informed_training": [{"epochs_run": 9}]},
        "xvector": {"original": stat(0.90, 1), "ignorant": stat(0.50, 1),
                    "informed": stat(0.62, 1), "undertrained": [True],
                    "informed_training": [{"epochs_run": 12}]},
    }
    return exp


def test_every_figure_shows_each_systems_agreement():
    from optin.evaluation.figures import agreement_line

    exp = experiment(attacked=("gender", "emotion"), figure="4")
    line = agreement_line(exp)
    assert "opt-in obfuscator 0.94" in line and "ADR (opt-out) 0.95" in line
    fig = make_figure(exp)
    assert "T agreement: opt-in obfuscator 0.94" in fig.axes[0].get_title()


def test_sweep_variants_draw_a_frontier_not_the_paper_figure(tmp_path):
    from optin.evaluation.figures import has_sweep, make_frontier_figure

    exp = _with_sweep(experiment(attacked=("gender", "emotion"), figure="4"))
    assert has_sweep(exp)
    paper = make_figure(exp)
    gids = {line.get_gid() for line in paper.axes[0].lines}
    assert not any(g and "@" in g for g in gids)  # variants stay off the paper figure
    frontier = make_frontier_figure(exp)
    assert len(frontier.axes) == 2
    line = next(x for x in frontier.axes[0].lines if x.get_gid() == "frontier/opt-in")
    # ordered by lambda_p: 0.3, base 1.0, 3.0 -> agreement 0.99, 0.94, 0.90
    assert list(line.get_xdata()) == pytest.approx([0.99, 0.94, 0.90])
    assert list(line.get_ydata()) == pytest.approx([0.80, 0.62, 0.55])
    assert any(x.get_gid() == "frontier/adr" for x in frontier.axes[0].lines)
    path = write_report(results(exp), tmp_path)
    text = path.read_text()
    assert "frontier" in text and (tmp_path / "figures" / "builtin-fig3a-frontier.png").is_file()
    assert "Attacker families on `gender`" in text
    assert "UNDERTRAINED (1/1 seeds)" in text
