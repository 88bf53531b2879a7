//! Pictures drawn on the server as SVG (no script, no library): a sync's last runs, and a
//! sparkline of rows sent for the overview. Each carries a text alternative, and the chart a
//! table of its figures for those who would rather read.

use std::fmt::Write;

use sallyport_state::{RunRecord, RunStatus};

use super::esc;

/// Colours with AA contrast against the page's white, told apart by more than hue (the legend
/// names them, and the table gives every figure).
const SENT: &str = "#1f6f43";
const FAILED: &str = "#b3261e";
const UNCHANGED: &str = "#8a8f98";
const DURATION: &str = "#1a4d8f";

/// The last runs of a sync (at most 30, given newest first as the history has them): a bar
/// per run of rows sent, failed and unchanged, and a line of how long each took.
pub(super) fn runs_chart(newest_first: &[RunRecord]) -> String {
    let runs: Vec<&RunRecord> = newest_first.iter().take(30).rev().collect();
    if runs.is_empty() {
        return r#"<p id="runs-chart">No run yet: the chart of the last 30 runs appears after the first.</p>"#.into();
    }
    let (w, h, left, bottom, top) = (720.0_f64, 220.0_f64, 48.0, 24.0, 12.0);
    let plot_h = h - bottom - top;
    let total = |r: &RunRecord| r.rows_sent + r.rows_failed + r.rows_unchanged;
    let max_rows = runs.iter().map(|r| total(r)).max().unwrap_or(0).max(1) as f64;
    let took = |r: &RunRecord| {
        r.finished_at
            .map(|f| (f - r.started_at).max(0))
            .unwrap_or(0)
    };
    let max_ms = runs.iter().map(|r| took(r)).max().unwrap_or(0).max(1) as f64;
    let slot = (w - left - 8.0) / 30.0;
    let bar = slot * 0.7;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="runs-chart" viewBox="0 0 {w} {h}" role="img" aria-labelledby="runs-chart-title" class="chart"><title id="runs-chart-title">The last {n} runs: rows sent, failed and unchanged per run (bars, up to {max} rows) and how long each took (line, up to {secs:.1} s)</title>"#,
        n = runs.len(),
        max = max_rows as u64,
        secs = max_ms / 1000.0,
    );
    // Axis and its top figure.
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{y0}" stroke="#555"/><line x1="{left}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#555"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end" fill="#333">{max}</text><text x="{tx}" y="{y0}" font-size="11" text-anchor="end" fill="#333">0</text>"##,
        y0 = h - bottom,
        x1 = w - 4.0,
        tx = left - 4.0,
        ty = top + 8.0,
        max = max_rows as u64,
    );
    let mut line = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let x = left + 4.0 + i as f64 * slot;
        let mut y = h - bottom;
        for (n, colour) in [
            (r.rows_sent, SENT),
            (r.rows_failed, FAILED),
            (r.rows_unchanged, UNCHANGED),
        ] {
            if n == 0 {
                continue;
            }
            let bh = (n as f64 / max_rows * plot_h).max(1.0);
            y -= bh;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="{colour}"/>"#
            );
        }
        if r.status == RunStatus::Failed {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="{FAILED}">✕</text>"#,
                x + bar / 2.0,
                h - bottom - 3.0
            );
        }
        let ly = h - bottom - took(r) as f64 / max_ms * plot_h;
        line.push(format!("{:.1},{ly:.1}", x + bar / 2.0));
        let _ = write!(
            svg,
            r#"<title>Run {}: {} sent, {} failed, {} unchanged, {:.1} s</title>"#,
            r.id,
            r.rows_sent,
            r.rows_failed,
            r.rows_unchanged,
            took(r) as f64 / 1000.0
        );
    }
    let _ = write!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{DURATION}" stroke-width="2"/></svg>"#,
        line.join(" ")
    );
    let legend = String::from(
        r#"<p class="legend"><span class="key" data-colour="sent">■ sent</span> <span class="key" data-colour="failed">■ failed</span> <span class="key" data-colour="unchanged">■ unchanged</span> <span class="key" data-colour="duration">— duration</span> (✕: the run failed)</p>"#,
    );
    let mut rows = String::new();
    for r in runs.iter().rev() {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
            r.id,
            esc(r.status.as_str()),
            r.rows_sent,
            r.rows_failed,
            r.rows_unchanged,
            took(r) as f64 / 1000.0
        );
    }
    format!(
        r#"<figure class="chart-box">{svg}{legend}<details><summary>The figures of the chart</summary><table><thead><tr><th>Run</th><th>Status</th><th>Sent</th><th>Failed</th><th>Unchanged</th><th>Took</th></tr></thead><tbody>{rows}</tbody></table></details></figure>"#
    )
}

/// A sparkline of rows sent by the last runs (given newest first), for the overview.
pub(super) fn sparkline(newest_first: &[RunRecord]) -> String {
    let runs: Vec<&RunRecord> = newest_first.iter().take(30).rev().collect();
    if runs.len() < 2 {
        return String::new();
    }
    let (w, h) = (100.0_f64, 24.0_f64);
    let max = runs.iter().map(|r| r.rows_sent).max().unwrap_or(0).max(1) as f64;
    let step = w / (runs.len() - 1) as f64;
    let points: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 2.0 - r.rows_sent as f64 / max * (h - 4.0)
            )
        })
        .collect();
    let failed = runs
        .iter()
        .filter(|r| matches!(r.status, RunStatus::Failed | RunStatus::Partial))
        .count();
    format!(
        r#"<svg class="sparkline" viewBox="0 0 {w} {h}" width="100" height="24" role="img" aria-label="Rows sent by the last {n} runs: from {first} to {last}, up to {max}; {failed} of them failed or partial"><polyline points="{}" fill="none" stroke="{SENT}" stroke-width="1.5"/></svg>"#,
        points.join(" "),
        n = runs.len(),
        first = runs[0].rows_sent,
        last = runs[runs.len() - 1].rows_sent,
        max = max as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, sent: u64, failed: u64, status: RunStatus) -> RunRecord {
        let mut r = RunRecord {
            id,
            status,
            started_at: 1_000,
            finished_at: Some(1_000 + id * 100),
            ..Default::default()
        };
        r.rows_sent = sent;
        r.rows_failed = failed;
        r.rows_unchanged = 10;
        r
    }

    #[test]
    fn the_chart_draws_each_run_and_says_it_in_words() {
        let runs: Vec<RunRecord> = (1..=40)
            .rev()
            .map(|i| run(i, i as u64, u64::from(i == 40), RunStatus::Succeeded))
            .collect();
        let svg = runs_chart(&runs);
        assert_eq!(svg.matches("<title>Run ").count(), 30, "the last 30");
        assert!(svg.contains("Run 40: 40 sent, 1 failed, 10 unchanged, 4.0 s"));
        assert!(!svg.contains("Run 10:"), "older runs are left out");
        assert!(svg.contains(r#"role="img""#) && svg.contains("<polyline"));
        assert!(svg.contains("<td>40</td><td>succeeded</td><td>40</td><td>1</td>"));
        let spark = sparkline(&runs);
        assert!(spark.contains("from 11 to 40"), "{spark}");
        assert!(runs_chart(&[]).contains("No run yet"));
        assert!(sparkline(&runs[..1]).is_empty());
    }
}
