//! Printing: tables, times, durations, progress.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use crate::{Global, ProgressMode};

/// `ms` since the Unix epoch as `2026-12-05 19:40:00.123 UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration for people: `850 µs`, `12.3 ms`, `4.20 s`, `3.5 min`, `2.0 h`.
pub(crate) fn human(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.1} ms", micros as f64 / 1e3)
    } else if micros < 120_000_000 {
        format!("{:.2} s", micros as f64 / 1e6)
    } else if micros < 7_200_000_000 {
        format!("{:.1} min", micros as f64 / 6e7)
    } else {
        format!("{:.1} h", micros as f64 / 3.6e9)
    }
}

/// Now, in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Rows under a header, each column as wide as its widest cell; the first
/// column left-aligned, the others right-aligned.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            if i == 0 {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A progress bar (or spinner, without a length) on stderr, as `--progress` says.
pub(crate) fn progress(global: &Global, len: Option<u64>, message: &str) -> ProgressBar {
    let target = match global.progress {
        ProgressMode::Never => ProgressDrawTarget::hidden(),
        ProgressMode::Auto => ProgressDrawTarget::stderr(),
        ProgressMode::Always if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            ProgressDrawTarget::stderr()
        }
        ProgressMode::Always => ProgressDrawTarget::term_like_with_hz(Box::new(PlainLines), 2),
    };
    let bar = match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})")
                .expect("a valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} {msg}: {pos} ({elapsed})")
                .expect("a valid template"),
        ),
    };
    bar.set_message(message.to_owned());
    bar
}

/// A terminal that is not one: each redraw becomes a plain line on stderr
/// (for logs and tests; `--progress always`).
#[derive(Debug)]
struct PlainLines;

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, line: &str) -> std::io::Result<()> {
        if !line.trim().is_empty() {
            eprintln!("{}", line.trim_end());
        }
        Ok(())
    }
    fn write_str(&self, text: &str) -> std::io::Result<()> {
        if !text.trim().is_empty() {
            eprintln!("{}", text.trim_end());
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(1_764_963_600_123), "2025-12-05 19:40:00.123 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
    }

    #[test]
    fn durations_and_tables() {
        assert_eq!(human(Duration::from_micros(850)), "850 µs");
        assert_eq!(human(Duration::from_micros(12_340)), "12.3 ms");
        assert_eq!(human(Duration::from_millis(4200)), "4.20 s");
        let table = table(&["NODE", "HITS"], &[vec!["CatNode".into(), "12".into()]]);
        assert_eq!(table, "NODE     HITS\nCatNode    12\n");
    }
}
