"""The report's first screen (settings, best configuration, its stages) and the figure
fixes a reader notices: integer ticks, no line between categories, no one-trial spreads."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import layout_study_rows, synthetic_row, tiny_spec

from coatsearch.report import build_report


def _section(page: str, name: str) -> str:
    return page.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]


def _payload(page: str, div_id: str) -> str:
    start = page.index(f'Plotly.newPlot(                        "{div_id}"')
    return page[start:page.index("</script>", start)].replace(" ", "")


def _split_run(write_study, per_split: int = 2, **columns):
    rng = np.random.default_rng(0)
    spec = json.dumps(tiny_spec().to_dict())
    rows = [synthetic_row(10 * s + k, "C-C-T-T", rng, spec=spec, **{"param.split": s, "param.seed": k}, **columns)
            for s in (1, 2, 3) for k in range(per_split)]
    for i, row in enumerate(rows):
        row["trial"] = i
    run_dir = write_study(rows)
    space = run_dir / "space.yaml"
    space.write_text(space.read_text() + "params: {split: {choices: [1, 2, 3]}, seed: {choices: [0, 1]}}\n"
                     "sampler: grid\nbackend: ray\nseed: 4\ndata: {source: fashion-mnist, train_size: 800}\n"
                     "train: {epochs: 3, batch_size: 32}\nbudget: {flops: 32M, tolerance: 0.03}\n")
    return run_dir


def test_the_first_screen_holds_the_settings_and_the_best_configuration_with_its_hand_off(write_study):
    run_dir = _split_run(write_study)
    page = build_report(run_dir).read_text()
    top = _section(page, "overview")
    assert page.index('id="overview"') < page.index('id="effects"')
    for text in ("fashion-mnist (augment none)", "train 800", "epochs 3, batch_size 32", "flops 32.00M within 3%",
                 "grid, 6 of 6 trials finished, seed 4", "ray, 1 at a time", "min of trial time",
                 "the same images for every seed"):
        assert text in top, text
    assert f"coatsearch best {run_dir} -o best.yaml" in top and "coatsearch train best.yaml --epochs 20" in top
    # the best network's stages: kind, blocks, width and the grid each sees
    spec = tiny_spec()
    for i, (stage, size) in enumerate(zip(spec.stages, spec.resolutions()), start=1):
        assert f"S{i} {'MBConv' if stage.kind == 'C' else 'Transformer'}<br>×{stage.blocks}, {stage.channels} ch" in top
        assert f"{size}×{size}" in top
    assert 'id="fig-by-trial"' in page


@pytest.mark.parametrize("train,suggested", [
    ({"epochs": 3}, "coatsearch train best.yaml --epochs 20"),  # a quick search: train it longer
    ({}, "coatsearch train best.yaml --epochs 20"),  # the trainer's default, 5 epochs
    ({"epochs": 30}, "coatsearch train best.yaml"),  # already longer: 20 would shorten it
    ({"epochs": 20}, "coatsearch train best.yaml"),
    ({"epochs": "30.0"}, "coatsearch train best.yaml"),  # as a YAML file may write it
    ({"epochs": 50, "steps": 2000}, "coatsearch train best.yaml"),  # a step budget: --epochs only re-divides it
    ({"steps": 2000}, "coatsearch train best.yaml"),
])
def test_the_hand_off_trains_on_as_long_as_the_search_chose_never_shorter(train, suggested):
    from coatsearch.report.hand_off import train_command

    assert train_command("best.yaml", train) == suggested


def test_a_step_budgeted_search_hands_off_its_own_budget_on_the_page_and_in_the_terminal(write_study):
    from coatsearch.report.data import load_run
    from coatsearch.report.terminal import best_line

    run_dir = _split_run(write_study)
    space = run_dir / "space.yaml"
    space.write_text(space.read_text().replace("train: {epochs: 3, batch_size: 32}",
                                               "train: {epochs: 50, steps: 2000, batch_size: 32}"))
    top = _section(build_report(run_dir).read_text(), "overview")
    assert "coatsearch train best.yaml</pre>" in top and "--epochs 20" not in top
    line = best_line(load_run(run_dir))
    assert line.endswith("&& coatsearch train best.yaml") and "to train it again, as its search did" in line


def test_the_hand_off_reads_the_epochs_the_search_sampled_for_the_best_trial(write_study):
    from coatsearch.report.data import load_run
    from coatsearch.report.hand_off import best_train_settings
    from coatsearch.report.terminal import best_line

    run = load_run(_split_run(write_study, **{"param.train.epochs": 40}))  # the space says 3
    assert best_train_settings(run)["epochs"] == 40
    assert best_line(run).endswith("&& coatsearch train best.yaml")


def test_the_settings_say_a_training_subset_drawn_per_seed(write_study):
    from coatsearch.report.cards import settings_card
    from coatsearch.report.data import load_run

    run_dir = _split_run(write_study)
    space = run_dir / "space.yaml"
    space.write_text(space.read_text().replace("train_size: 800}", "train_size: 800, subset: per_seed}"))
    card = settings_card(load_run(run_dir))
    assert "drawn per training seed; validation and test the same images for every seed" in card
    assert "the same images for every seed (drawn" not in card


def test_the_settings_give_the_training_images_the_trials_trained_on(write_study):
    from coatsearch.report.cards import settings_card
    from coatsearch.report.data import load_run

    rng = np.random.default_rng(1)
    rows = [synthetic_row(k, "C-C-T-T", rng, train_images=images, **{"param.seed": k})
            for k, images in enumerate((1800, 1800))]
    card = settings_card(load_run(write_study(rows, name="all-images")))
    assert "train 1800 images" in card  # no train_size set: the rows say how many were used
    rows[1]["train_images"] = 900  # a searched training size
    assert "train 900–1800 images" in settings_card(load_run(write_study(rows, name="sized")))


def test_an_integer_parameter_has_ticks_at_its_values_and_categories_no_line(write_study):
    page = build_report(_split_run(write_study)).read_text()
    split = _payload(page, "fig-effect-split")
    assert '"tickvals":[1.0,2.0,3.0]' in split and '"ticktext":["1","2","3"]' in split
    layouts = build_report(write_study(layout_study_rows(per_layout=2), name="layouts2")).read_text()
    effect = _payload(layouts, "fig-effect-layout")
    assert '"mode":"markers+lines"' not in effect and '"name":"mean,95%interval"' in effect


def test_spreads_of_one_trial_per_group_are_not_drawn(write_study):
    one_each = build_report(_split_run(write_study, per_split=1)).read_text()
    assert 'id="fig-gap"' not in one_each and 'id="fig-edf"' not in one_each
    assert "no group has two complete trials" in one_each
    two_each = build_report(write_study(layout_study_rows(per_layout=2), name="two")).read_text()
    assert 'id="fig-gap"' in two_each and 'id="fig-edf"' in two_each


def test_the_comparisons_show_the_difference_and_verdict_first(write_study):
    page = build_report(_split_run(write_study)).read_text()
    table = page.split('id="comparisons"', 1)[1].split("</tr>", 1)[0]
    heads = re.findall(r"<th[ >][^>]*>?([^<]*)<", table)
    assert heads[:10] == ["factor", "metric", "first", "second", "trials", "difference", "ci95_low", "ci95_high",
                          "p_holm", "verdict"]


def test_at_a_matched_cost_every_output_ranks_by_accuracy_alone(write_study):
    """One rule for pareto.csv, the terminal and the report: a cost every candidate was
    matched to differs by rounding only, so no front is taken over it."""
    import pandas as pd
    from rich.console import Console

    from coatsearch.report import load_run
    from coatsearch.report.terminal import outcome_tables

    run_dir = _split_run(write_study)
    page = build_report(run_dir).read_text()
    best = pd.read_csv(run_dir / "results.csv").sort_values("val_acc").iloc[-1]
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert pareto["trial"].tolist() == [best["trial"]]  # not the cheapest by rounding noise beside it
    assert "Best by val_acc (max): no Pareto front" in page and "cost is equal by construction" in _section(page, "tables")
    shown = Console(record=True, width=200)
    for part in outcome_tables(load_run(run_dir).analysis):
        shown.print(part)
    assert "Best by val_acc (max) (one objective: no Pareto front)" in shown.export_text()
    assert "Pareto front:" not in shown.export_text()


def test_an_effect_that_width_matching_confounds_with_shapes_says_so(write_study):
    from coatsearch.report import load_run
    from coatsearch.report.confounds import shape_notes

    run_dir = _split_run(write_study)
    results = run_dir / "results.csv"
    import pandas as pd

    table = pd.read_csv(results)
    table["channels"] = table["param.split"].map({1: "16,40,64,192", 2: "16,40,96,160", 3: "16,48,96,160"})
    table.to_csv(results, index=False)
    note = shape_notes(load_run(run_dir))["split"]
    assert "channels 16,40,64,192 at 1, 16,40,96,160 at 2, 16,48,96,160 at 3" in note
    assert "the effect of split includes that of the shapes it induces" in note
    page = build_report(run_dir).read_text()
    assert 'id="confound-split"' in _section(page, "effects")
    # one shape for every value (widths fixed): nothing to say
    table["channels"] = "16,40,96,160"
    table.to_csv(results, index=False)
    assert shape_notes(load_run(run_dir)) == {}


def test_the_best_networks_per_class_accuracy_is_read_on_the_images_it_was_scored_on(write_study):
    import yaml

    from coatsearch import perimage
    from coatsearch.report import load_run
    from coatsearch.report.per_class import per_class_figure
    from coatsearch.search.inputs import load_trial_data
    from coatsearch.space import DataSettings

    data = {"source": "fashion-mnist", "train_size": 256, "val_fraction": 0.04}
    labels = load_trial_data(DataSettings.model_validate(data), 16, 3).val.labels.numpy()
    bits = np.random.default_rng(0).random(len(labels)) < 0.7
    rng = np.random.default_rng(1)
    rows = [synthetic_row(0, "C-C-T-T", rng, image_size=16, val_correct=perimage.encode(bits, labels), val_acc=float(bits.mean())),
            synthetic_row(1, "C-C-C-T", rng, image_size=16, val_acc=0.3)]
    run_dir = write_study(rows)
    space = run_dir / "space.yaml"
    space.write_text(space.read_text() + yaml.safe_dump({"data": data, "seed": 3}))
    fig = per_class_figure(load_run(run_dir))
    expected = [bits[labels == k].mean() for k in range(10)]
    assert list(fig.data[0].x) == [pytest.approx(a) for a in expected]
    assert fig.data[0].y[0] == "T-shirt/top" and "trial 0" in fig.layout.title.text
    # other images (another seed's split): the fingerprint differs, no figure
    space.write_text(space.read_text().replace("seed: 3", "seed: 4"))
    assert per_class_figure(load_run(run_dir)) is None
