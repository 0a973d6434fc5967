"""``steps.png`` shows what a researcher looks at (issue 19 §5): the clients' step sizes as the
cohort's distribution, the per-coordinate spread, the server's step, the detector's alarms and
the rounds with extra local work; summary.json reports a client method nobody ran. Checked
through the figure's artists, not its pixels."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from simulations.report import RunWriter, load_rows, steps_figure, summarize  # noqa: E402

CONFIG = {
    "scenario": "drift-digits",
    "strategy": "fedadapt",
    "server-optimizer": "cp-adam",
    "client-optimizer": "dsa",
    "seed": 0,
}


def rows(server_lr: float = 1.0, per_coordinate: bool = True, rounds: int = 10) -> list[dict]:
    out: list[dict] = [{"round": 0, "accuracy": 0.1}]
    for r in range(1, rounds + 1):
        med = 0.01 * (1 + 0.1 * r)
        spread = 5.0 if per_coordinate else 1.0
        out.append(
            {
                "round": r,
                "accuracy": 0.5,
                "client-lr": med * 1.05,
                "client-lr-min": med / 2,
                "client-lr-p25": med * 0.8,
                "client-lr-median": med,
                "client-lr-p75": med * 1.2,
                "client-lr-max": med * 2,
                "client-step-min": med / spread,
                "client-step-mean": med,
                "client-step-max": med * spread,
                "server-lr": server_lr,
                "server-change": 1.0 if r in (4, 8) else 0.0,
                "server-detector-alarm": 1.0 if r == 4 else 0.0,
                "local-work": 3.0 if r in (5, 6, 7, 9) else 1.0,
                "drift-events": ["start cp0 0->1 offset 0"] if r == 4 else [],
                "ignored-client-optimizer-replies": 0,
            }
        )
    return out


def by_gid(fig, gid):
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


@pytest.fixture
def figure():
    figs = []

    def make(*args, **kwargs):
        fig = steps_figure(*args, **kwargs)
        figs.append(fig)
        return fig

    yield make
    for f in figs:
        plt.close(f)


def test_steps_figure_shows_the_cohort_the_server_alarms_and_local_work(figure):
    data = rows()
    fig = figure(data, CONFIG)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    title = ax.get_title()
    assert all(s in title for s in ("drift-digits", "fedadapt", "cp-adam", "dsa"))
    # the cohort: the median line is client-lr-median, with bands for min-max and 25-75%
    (median,) = by_gid(fig, "client-lr")
    assert list(median.get_xdata()) == list(range(1, 11))
    assert list(median.get_ydata()) == pytest.approx([r["client-lr-median"] for r in data[1:]])
    assert len(by_gid(fig, "client-lr-range")) == 1 and len(by_gid(fig, "client-lr-iqr")) == 1
    # per-coordinate spread (step-min < step-max)
    assert len(by_gid(fig, "client-step-range")) == 1 and len(by_gid(fig, "client-step-mean")) == 1
    # the server's step: 100x the clients', so on its own (log) axis
    (server,) = by_gid(fig, "server-lr")
    assert server.axes is not ax and server.axes.get_yscale() == "log"
    # one marker per detector alarm; the other server reset (round 8) marked differently
    assert [line.get_xdata()[0] for line in by_gid(fig, "alarm")] == [4]
    assert [line.get_xdata()[0] for line in by_gid(fig, "change")] == [8]
    assert [line.get_xdata()[0] for line in by_gid(fig, "drift")] == [4]
    # extra local work: one shaded span per run of consecutive rounds
    spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in by_gid(fig, "local-work"))
    assert spans == [(4.5, 7.5), (8.5, 9.5)]
    labels = ax.get_legend().get_texts()
    assert any("extra local work (x3)" in t.get_text() for t in labels)
    assert any(t.get_text() == "detector alarm" for t in labels)
    # integer round ticks, legend outside the data
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 10]
    assert ticks and all(float(t).is_integer() for t in ticks)
    renderer = fig.canvas.get_renderer()
    legend_box = ax.get_legend().get_window_extent(renderer)
    assert legend_box.x0 >= ax.get_window_extent(renderer).x1


def test_scalar_methods_and_close_scales_share_one_axis(figure):
    fig = figure(rows(server_lr=0.02, per_coordinate=False), CONFIG)
    assert by_gid(fig, "client-step-range") == []  # step-min == step-max: nothing to spread
    (server,) = by_gid(fig, "server-lr")
    assert server.axes is fig.axes[0] and len(fig.axes) == 1


def test_rows_written_before_the_median_show_the_mean(figure):
    old = [
        {k: v for k, v in r.items() if not k.startswith("client-lr-") and k != "local-work"}
        for r in rows()
    ]
    fig = figure(old, CONFIG)
    (line,) = by_gid(fig, "client-lr")
    assert line.get_label() == "clients' lr, mean"
    assert list(line.get_ydata()) == pytest.approx([r["client-lr"] for r in old[1:]])
    assert by_gid(fig, "local-work") == [] and by_gid(fig, "client-lr-range") == []


def test_run_directory_has_steps_png_and_the_keys(tmp_path):
    writer = RunWriter(tmp_path, CONFIG)
    for row in rows():
        row = dict(row)
        if row["round"] in (1, 2):
            row["ignored-client-optimizer-replies"] = 4
        writer.add(row["round"], row)
        writer.flush(row["round"])
    summary = writer.finish()
    assert (tmp_path / "steps.png").stat().st_size > 0
    written = load_rows(tmp_path)
    assert all("client-lr-median" in r and "local-work" in r for r in written[1:])
    assert summary["ignored-client-optimizer"] == {"method": "dsa", "replies": 8, "rounds": [1, 2]}
    assert summary["local-work-rounds"] == [5, 6, 7, 9]
    # round 8 is a server reset without a detector alarm (a known change): not an alarm
    assert summary["detector-alarms"] == 1 and summary["detector-alarm-rounds"] == [4]
    assert summary["server-reset-rounds"] == [8]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["ignored-client-optimizer"]["replies"] == 8


def test_summary_is_silent_when_every_client_ran_the_method():
    summary = summarize(rows(), CONFIG)
    assert "ignored-client-optimizer" not in summary


def test_a_scalar_methods_step_range_is_not_drawn_as_a_per_coordinate_spread():
    """hd's clients differ in lr, but each client's step is its lr: no hatched band."""
    scalar = rows(per_coordinate=False)
    for r in scalar[1:]:
        r["client-step-min"], r["client-step-max"] = r["client-lr-min"], r["client-lr-max"]
    fig = steps_figure(scalar, {**CONFIG, "client-optimizer": "hd"})
    try:
        assert by_gid(fig, "client-lr-range") and not by_gid(fig, "client-step-range")
    finally:
        plt.close(fig)


def test_a_round_whose_lowest_client_lr_is_zero_keeps_its_range():
    """HD clips a diverging lr to 0 while another client's grows to 1e4: the round's band
    must still reach 1e4, not vanish from the log axis."""
    data = rows(per_coordinate=False)
    data[5]["client-lr-min"], data[5]["client-lr-max"] = 0.0, 1.7e4
    fig = steps_figure(data, CONFIG)
    try:
        band = by_gid(fig, "client-lr-range")[0]
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.max() == pytest.approx(1.7e4)
    finally:
        plt.close(fig)


def test_the_privacy_spent_by_the_end_is_in_the_summary():
    data = rows()
    for i, r in enumerate(data[1:], 1):
        r["server-dp-epsilon"] = 0.5 * i  # the accountant's running total
    s = summarize(data, {**CONFIG, "dp-delta": 1e-5})
    assert s["dp-epsilon"] == pytest.approx(5.0) and s["dp-delta"] == 1e-5
    assert "dp-epsilon" not in summarize(rows(), CONFIG)  # no privacy, no entry
