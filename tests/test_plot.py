import math

import numpy as np
import pytest
from PIL import Image

from cmfq.evaluation.curves import band_edges, group_curve, load_runs, plot_curves, smooth
from cmfq.evaluation.figures import plot_win_rates


def is_png_with_content(path):
    image = Image.open(path)
    assert image.format == "PNG"
    pixels = np.asarray(image.convert("L"))
    return pixels.std() > 0  # more than a blank canvas


def test_heatmap_is_written(tmp_path):
    path = tmp_path / "heatmap.png"
    ties = [[math.nan, 0.1, 0.0], [0.1, math.nan, 0.1], [0.0, 0.1, math.nan]]
    plot_win_rates(["a", "b", "c"], [[math.nan, 0.7, 0.1], [0.2, math.nan, 0.5],
                                      [0.9, 0.4, math.nan]], path, ties=ties)
    assert is_png_with_content(path)


def test_heatmap_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError):
        plot_win_rates(["a", "b"], [[0.5]], tmp_path / "x.png")


def write_run(root, name, algo, rewards, map_size=20):
    # The layout ``cmfq train`` writes: config.toml and metrics.csv in the run folder.
    run = root / name
    run.mkdir()
    (run / "config.toml").write_text(f'algo = "{algo}"\nseed = 0\nmap_size = {map_size}\n')
    lines = ["round,reward,kills,win"] + [
        f"{i},{r},{2 * r},{int(r > 0.5)}" for i, r in enumerate(rewards)
    ]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_smooth_is_a_trailing_mean_ignoring_nan():
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(smooth(values, 2), [1.0, 2.0, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(smooth(values, 1)[[0, 1, 3, 4]], [1.0, 3.0, 5.0, 7.0])
    with pytest.raises(ValueError):
        smooth(values, 0)


def test_runs_are_grouped_by_algo_and_averaged(tmp_path):
    paths = [
        write_run(tmp_path, "cmfq-s0", "cmfq", [0, 2, 4, 6]),
        write_run(tmp_path, "cmfq-s1", "cmfq", [2, 4, 6]),  # shorter: curves cut to 3 rounds
        write_run(tmp_path, "mfq-s0", "mfq", [1, 1, 1, 1]),
    ]
    runs = load_runs(paths)
    assert [r.group for r in runs] == ["cmfq", "cmfq", "mfq"]
    x, mean, spread = group_curve(runs[:2], "reward", window=1, band="std")
    np.testing.assert_allclose(x, [0, 1, 2])
    np.testing.assert_allclose(mean, [1, 3, 5])
    np.testing.assert_allclose(spread, np.full(3, np.sqrt(2)))
    _, _, single = group_curve(runs[2:], "reward", window=1)
    assert np.isnan(single).all()


def test_group_by_several_config_keys(tmp_path):
    paths = [write_run(tmp_path, "a", "cmfq", [1], map_size=20),
             write_run(tmp_path, "b", "cmfq", [1], map_size=40)]
    assert [r.group for r in load_runs(paths, group_by="algo,map_size")] == ["cmfq-20", "cmfq-40"]
    with pytest.raises(ValueError, match="no"):
        load_runs(paths, group_by="optimizer")


def test_a_run_without_a_saved_config_is_its_own_group(tmp_path):
    runs = [tmp_path / "mfq-battle-seed2", tmp_path / "mfq-battle-seed3"]
    for run in runs:
        run.mkdir()
        (run / "metrics.csv").write_text("round,reward\n0,1\n")
    assert [r.group for r in load_runs(runs)] == ["mfq-battle-seed2", "mfq-battle-seed3"]
    assert load_runs(runs[:1], group_by="run")[0].group == "mfq-battle-seed2"


def test_curves_are_written(tmp_path):
    runs = load_runs([
        write_run(tmp_path, "a1", "cmfq", np.linspace(0, 1, 30)),
        write_run(tmp_path, "a2", "cmfq", np.linspace(0, 2, 30)),
        write_run(tmp_path, "b1", "mfq", np.linspace(1, 0, 30)),
    ])
    path = tmp_path / "curves.png"
    plotted = plot_curves(runs, path, metrics=("reward", "kills", "win", "elo"), window=5)
    assert plotted == ["reward", "kills", "win"]  # elo was never logged
    assert is_png_with_content(path)


def test_curves_reject_unknown_metrics_and_missing_logs(tmp_path):
    runs = load_runs([write_run(tmp_path, "a", "cmfq", [1, 2])])
    with pytest.raises(ValueError, match="columns"):
        plot_curves(runs, tmp_path / "c.png", metrics=("elo",))
    with pytest.raises(FileNotFoundError):
        load_runs([tmp_path / "missing"])


def test_band_is_the_t_interval_of_the_mean_or_the_deviation(tmp_path):
    paths = [write_run(tmp_path, f"cmfq-s{s}", "cmfq", [s, 2 * s, 3 * s]) for s in range(4)]
    runs = load_runs(paths)
    _, mean, std = group_curve(runs, "reward", window=1, band="std")
    _, same_mean, half = group_curve(runs, "reward", window=1, band="ci")
    np.testing.assert_allclose(same_mean, mean)
    # Four seeds: mean ± t(3)·s/2.
    np.testing.assert_allclose(half, std * 3.1824 / 2, rtol=2e-3)
    with pytest.raises(ValueError, match="band"):
        group_curve(runs, "reward", window=1, band="iqr")
    plot_curves(runs, tmp_path / "std.png", band="std")
    assert is_png_with_content(tmp_path / "std.png")


def test_a_band_stays_within_the_values_the_runs_logged(tmp_path):
    # Two seeds' 0/1 wins: the t interval (t(1) = 12.7) reaches far below 0 and above 1.
    paths = [write_run(tmp_path, "mfq-s0", "mfq", [0, 1, 0, 1]),
             write_run(tmp_path, "mfq-s1", "mfq", [1, 1, 1, 0])]
    runs = load_runs(paths)
    _, mean, half = group_curve(runs, "win", window=2)
    assert (mean - half < 0).any() and (mean + half > 1).any()
    low, high = band_edges(runs, "win", mean, half)
    assert low.min() == 0 and high.max() == 1
    np.testing.assert_array_equal(low, np.clip(mean - half, 0, 1))
