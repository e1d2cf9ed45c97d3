//! The landing page in a real browser (headless Chromium, Debian's
//! `chromium` package): after its script ran, the DOM holds the zone tree
//! fetched live from /api/v1/zones, and a screenshot of it is not blank.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs headless Chromium with `args` on `url`, bounded in time; stdout.
fn chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (Debian package) must be installed; .ci/run installs it");
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(90) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Share of pixels that differ from the page background, and how many
/// distinct colours the picture has.
fn ink(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| &p[..3.min(channels)])
        .collect();
    let background = [0xfa, 0xfb, 0xfc];
    let inked = pixels
        .iter()
        .filter(|p| p.iter().zip(background).any(|(a, b)| a.abs_diff(b) > 8))
        .count();
    let colours: std::collections::BTreeSet<&[u8]> = pixels.iter().copied().collect();
    (inked as f64 / pixels.len() as f64, colours.len())
}

#[test]
fn the_landing_page_renders_the_live_zone_tree_in_chromium() {
    let agents = Cluster::builder("landing")
        .zones(["/web/a/h0", "/web/a/h1", "/web/b/h2"])
        .spawn();
    let dir = agents.dir.clone();
    assert!(
        eventually(Duration::from_secs(30), || agents.iter().all(|a| a
            .get("/metrics")
            .is_some_and(
                |m| zone_value(&m, "astrolabe_zone_members", "/") == Some(3.0)
            ))),
        "cluster did not converge"
    );
    let url = format!("http://127.0.0.1:{}/", agents[0].web);
    // The zones agent 0 knows, as the API lists them.
    let api: serde_json::Value =
        serde_json::from_str(&agents[0].get("/api/v1/zones").unwrap()).unwrap();
    let known: Vec<String> = api["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zone_path"].as_str().unwrap().to_string())
        .collect();
    for z in ["/", "/web", "/web/a", "/web/b", "/web/a/h0", "/web/a/h1"] {
        assert!(known.contains(&z.to_string()), "{z} not in {known:?}");
    }

    // No external assets: every src and href stays on the agent.
    let html = agents[0].get("/").unwrap();
    for needle in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(http",
        "@import",
    ] {
        assert!(
            !html.contains(needle),
            "external asset ({needle}) in the page"
        );
    }
    assert!(html.contains("<script>") && html.contains("/api/v1/zones"));

    // The DOM after the script ran: marked live, one row per zone.
    let profile = dir.join("profile");
    let mut dom = String::new();
    let live = eventually(Duration::from_secs(120), || {
        dom = chromium(
            &profile,
            &["--virtual-time-budget=8000", "--dump-dom"],
            &url,
        );
        dom.contains("data-live=\"1\"")
    });
    assert!(live, "the script did not render the live tree:\n{dom}");
    assert!(dom.contains("live: "), "{dom}");
    for z in &known {
        assert!(
            dom.contains(&format!("<tr data-zone=\"{z}\"")),
            "row {z} missing:\n{dom}"
        );
    }
    let rows = dom.matches("<tr data-zone=").count();
    assert!(rows >= known.len(), "{rows} rows for {} zones", known.len());

    // The screenshot shows a page, not a blank canvas.
    let shot = dir.join("landing.png");
    let ok = eventually(Duration::from_secs(120), || {
        let _ = std::fs::remove_file(&shot);
        chromium(
            &profile,
            &[
                "--virtual-time-budget=8000",
                "--window-size=1280,720",
                &format!("--screenshot={}", shot.display()),
            ],
            &url,
        );
        shot.exists()
    });
    assert!(ok, "chromium wrote no screenshot");
    let (share, colours) = ink(&shot);
    // Keep a copy for people to look at.
    let keep = std::env::temp_dir().join("astrolabe-landing.png");
    let _ = std::fs::copy(&shot, &keep);
    assert!(
        share > 0.02 && colours > 16,
        "the screenshot looks blank: {:.1}% inked, {colours} colours ({})",
        share * 100.0,
        keep.display()
    );
}
