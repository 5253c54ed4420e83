//! The pieces of `make bench` that can be checked without running it: the generated
//! 1,000-VM host loads in libvirt's test driver as intended, and the report computes
//! ratios, targets and the docs/benchmarks.md splice correctly.

use crate::scale_host as host;
#[allow(dead_code)]
#[path = "../../benches/scale/report.rs"]
mod report;

use report::{percentile, splice_results, Figure, Report, Target, WrkResult};
use virtdeck::domain::host::KvmStatus;
use virtdeck::domain::vm::VmState;
use virtdeck::hypervisor::Hypervisor;

const DEMO: &str = include_str!("../../demo/demo-host.xml");

#[test]
fn the_generated_host_has_a_thousand_vms_in_mixed_states_on_the_test_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.xml");
    std::fs::write(&path, host::scale_host_xml(DEMO, 1000).unwrap()).unwrap();
    let hv = virtdeck::adapters::libvirt::Libvirt::open(
        &format!("test://{}", path.display()),
        KvmStatus::NotApplicable,
    )
    .expect("the test driver loads the generated host");

    let vms = hv.list_vms().unwrap();
    assert_eq!(vms.len(), 1000);
    assert_eq!(vms[0].name, "vm0001");
    assert_eq!(vms[999].name, "vm1000");
    let running = vms.iter().filter(|v| v.state == VmState::Running).count();
    let paused = vms.iter().filter(|v| v.state == VmState::Paused).count();
    let off = vms.iter().filter(|v| v.state == VmState::ShutOff).count();
    assert_eq!((running, paused, off), (600, 100, 300));
    let expected_running = (1..=1000).filter(|i| host::is_running(*i)).count();
    assert_eq!(running, expected_running, "is_running agrees with libvirt");
    assert!(vms.iter().all(|v| (1..=2).contains(&v.vcpus)));

    let facts = hv.host_facts().unwrap();
    assert_eq!(facts.cpu_count, host::HOST_CPUS);
    assert_eq!(facts.memory_mib, host::HOST_MEMORY_KIB / 1024);
    // The demo host's networks and pools came along.
    assert!(hv.networks().unwrap().iter().any(|n| n.name == "default"));
    assert!(hv.pools().unwrap().iter().any(|p| p.name == "default"));
}

#[test]
fn a_demo_host_without_domains_is_refused_with_a_reason() {
    let err = host::scale_host_xml("<node><cpu/></node>", 10).unwrap_err();
    assert!(err.contains("<domain>"), "{err}");
}

#[test]
fn percentiles_use_the_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(50.0));
    assert_eq!(percentile(&v, 99.0), Some(99.0));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn targets_and_ratios_decide_met_or_missed() {
    let f = |v: f64| Figure::new("S", "k", "l", "MiB", v);
    assert_eq!(f(19.9).target(Target::Below(20.0)).pass(), Some(true));
    assert_eq!(f(20.0).target(Target::Below(20.0)).pass(), Some(false));
    assert_eq!(f(10.0).target(Target::AtLeast(10.0)).pass(), Some(true));
    let fast = f(300.0).vs("ref", 200.0);
    assert_eq!(fast.ratio(), Some(1.5));
    assert_eq!(
        fast.clone().target(Target::RatioAtLeast(1.5)).pass(),
        Some(true)
    );
    assert_eq!(fast.target(Target::RatioAtMost(1.0)).pass(), Some(false));
    // A ratio target without a usable reference is neither met nor missed.
    assert_eq!(f(1.0).target(Target::RatioAtMost(1.0)).pass(), None);
    assert_eq!(f(1.0).vs("zero", 0.0).ratio(), None);
    assert_eq!(f(1.0).pass(), None);
}

fn sample_report() -> Report {
    Report {
        machine: vec![("CPU".into(), "2 × test | cpu".into())],
        figures: vec![
            Figure::new("Memory", "idle", "VmRSS idle", "MiB", 12.5).target(Target::Below(20.0)),
            Figure::new("Memory", "loaded", "VmRSS loaded", "MiB", 55.0)
                .vs("virsh", 110.0)
                .target(Target::Below(40.0)),
            Figure::new("Start-up", "start", "exec → healthz", "ms", 42.0),
        ],
        notes: vec![("Memory".into(), "A note on memory.".into())],
    }
}

#[test]
fn the_markdown_report_shows_every_figure_with_reference_ratio_and_result() {
    let md = sample_report().markdown();
    assert!(md.contains("Targets: **1 met, 1 missed**"), "{md}");
    assert!(
        md.contains("| CPU | 2 × test \\| cpu |"),
        "pipes escaped: {md}"
    );
    assert!(md.contains("### Memory"));
    assert!(md.contains("### Start-up"));
    assert!(
        md.contains("| VmRSS idle | 12.5 MiB |  |  | < 20 MiB | met |"),
        "{md}"
    );
    assert!(
        md.contains("| VmRSS loaded | 55 MiB | 110 MiB (virsh) | 0.50 | < 40 MiB | **missed** |"),
        "{md}"
    );
    assert!(
        md.contains("| exec → healthz | 42 ms |  |  |  |  |"),
        "{md}"
    );
    assert!(md.contains("A note on memory."));
    assert!(md.find("### Memory").unwrap() < md.find("### Start-up").unwrap());
}

#[test]
fn the_json_report_carries_values_ratios_and_pass() {
    let j = sample_report().json();
    assert_eq!(j["targets"]["met"], 1);
    assert_eq!(j["targets"]["missed"], 1);
    let loaded = &j["figures"][1];
    assert_eq!(loaded["key"], "loaded");
    assert_eq!(loaded["value"], 55.0);
    assert_eq!(loaded["reference"]["value"], 110.0);
    assert_eq!(loaded["ratio"], 0.5);
    assert_eq!(loaded["pass"], false);
    assert_eq!(loaded["target"], "< 40 MiB");
    assert!(j["figures"][2]["pass"].is_null());
    assert_eq!(j["machine"]["CPU"], "2 × test | cpu");
}

#[test]
fn results_replace_only_the_section_between_the_markers() {
    let doc = format!(
        "# Benchmarks\n\nintro\n\n{}\nold results\n{}\n\n## How to run\n",
        report::RESULTS_BEGIN,
        report::RESULTS_END
    );
    let new = splice_results(&doc, "new results\n").unwrap();
    assert!(new.starts_with("# Benchmarks\n\nintro\n\n"));
    assert!(new.contains("new results"));
    assert!(!new.contains("old results"));
    assert!(new.ends_with(&format!("{}\n\n## How to run\n", report::RESULTS_END)));
    // Splicing again gives the same document.
    assert_eq!(splice_results(&new, "new results").unwrap(), new);
    assert!(splice_results("# no markers", "x").is_err());
    assert!(splice_results(report::RESULTS_BEGIN, "x").is_err());
}

#[test]
fn wrk_summaries_are_read_from_the_report_line() {
    let out = "Running 15s test @ http://127.0.0.1:1/vms\n\
        WRK {\"requests\":150,\"duration_us\":15000000,\"bytes\":1000,\"connect_errors\":0,\
        \"read_errors\":0,\"write_errors\":0,\"timeouts\":0,\"non_2xx\":2,\"p50_us\":5000,\
        \"p90_us\":6000,\"p99_us\":7000,\"max_us\":8000}\n";
    let r = WrkResult::parse(out).unwrap();
    assert_eq!(r.requests, 150);
    assert_eq!(r.requests_per_second(), 10.0);
    assert_eq!(r.errors(), 2, "non-2xx answers count as errors");
    assert_eq!(r.p99_us, 7000);
    assert!(WrkResult::parse("no report here").is_err());
    assert!(WrkResult::parse("WRK {\"requests\":1}").is_err());
}
