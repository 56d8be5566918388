//! The JSON report: the report model serialized as it is (the model is the contract).

use crate::analysis::model::ReportModel;
use crate::report::Report;
use std::io::{self, Write};

/// Writes the model as JSON followed by a newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonReport {
    /// Indent for people reading it; compact otherwise.
    pub pretty: bool,
}

impl Default for JsonReport {
    fn default() -> Self {
        JsonReport { pretty: true }
    }
}

impl Report for JsonReport {
    fn render(&self, model: &ReportModel, out: &mut dyn Write) -> io::Result<()> {
        let result = if self.pretty {
            serde_json::to_writer_pretty(&mut *out, model)
        } else {
            serde_json::to_writer(&mut *out, model)
        };
        result.map_err(io::Error::from)?;
        out.write_all(b"\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;
    use serde_json::Value;

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn sorted(mut want: Vec<&str>) -> Vec<&str> {
        want.sort_unstable();
        want
    }

    fn parse(report: JsonReport) -> (String, Value) {
        let mut out = Vec::new();
        report.render(&fixture::model(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).expect("valid JSON");
        (text, value)
    }

    #[test]
    fn field_names_follow_the_contract() {
        let (text, v) = parse(JsonReport::default());
        assert!(text.ends_with("}\n"));
        assert_eq!(
            keys(&v),
            sorted(vec![
                "leakscope_version",
                "format_version",
                "command",
                "exit_status",
                "signal",
                "live",
                "processes",
                "warnings",
                "aging"
            ])
        );
        assert_eq!(v["live"], false);
        assert_eq!(v["format_version"], 2);
        assert_eq!(v["exit_status"], 137);
        assert_eq!(v["signal"], 9);
        assert_eq!(v["command"], serde_json::json!(["./app", "--leak"]));

        let p = &v["processes"][0];
        assert_eq!(
            keys(p),
            sorted(vec![
                "pid",
                "ppid",
                "command",
                "argv",
                "exe",
                "origin",
                "parent",
                "stream",
                "stream_problem",
                "totals",
                "dropped",
                "unknown_frees",
                "sites",
                "sites_omitted",
                "notes",
                "gpu",
                "heap",
                "aging"
            ])
        );
        assert_eq!(p["gpu"], Value::Null, "no GPU call");
        assert_eq!(p["heap"], Value::Null, "no heap reading");
        assert_eq!(p["command"], "./app --leak");
        assert_eq!(p["origin"], "exec");
        assert_eq!(p["parent"], Value::Null);
        assert_eq!(p["stream"], "clean");
        assert_eq!(p["stream_problem"], Value::Null);

        let counts = vec![
            "outstanding_bytes",
            "outstanding_count",
            "allocations",
            "allocated_bytes",
            "temporary",
        ];
        let mut totals = counts.clone();
        totals.push("by_memory");
        assert_eq!(keys(&p["totals"]), sorted(totals));
        assert_eq!(keys(&p["totals"]["by_memory"]), vec!["host", "mapped"]);
        assert_eq!(keys(&p["totals"]["by_memory"]["host"]), sorted(counts));
        assert_eq!(
            p["totals"]["by_memory"]["mapped"]["outstanding_bytes"],
            1 << 20
        );
        assert_eq!(
            keys(&p["dropped"]),
            sorted(vec!["allocs", "alloc_bytes", "frees"])
        );

        let site = &p["sites"][1];
        assert_eq!(
            keys(site),
            sorted(vec![
                "memory",
                "pool",
                "device",
                "space",
                "owned",
                "during_capture",
                "outstanding_bytes",
                "outstanding_count",
                "allocations",
                "allocated_bytes",
                "peak_bytes",
                "temporary",
                "frames",
                "trend"
            ])
        );
        assert_eq!(site["trend"], Value::Null, "not tested");
        assert_eq!(site["memory"], "host");
        assert_eq!(site["pool"], "malloc");
        assert_eq!(site["device"], Value::Null);
        assert_eq!(site["space"], Value::Null);
        assert_eq!(site["owned"], true);
        assert_eq!(site["during_capture"], false);
        assert_eq!(p["sites"][0]["memory"], "mapped");
        let frame = &site["frames"][0];
        assert_eq!(
            keys(frame),
            sorted(vec![
                "function", "file", "line", "module", "address", "inlined"
            ])
        );
        assert_eq!(frame["function"], "fill_cache");
        assert_eq!(frame["line"], 12);
        assert_eq!(frame["inlined"], true);
        assert_eq!(frame["address"], "0x1180");
        let unknown = &p["sites"][0]["frames"][0];
        assert_eq!(unknown["function"], Value::Null);
        assert_eq!(unknown["file"], Value::Null);
        assert_eq!(unknown["line"], Value::Null);
        assert_eq!(unknown["module"], Value::Null);

        let child = &v["processes"][1];
        assert_eq!(child["origin"], "fork");
        assert_eq!(child["parent"], 4242);
        assert_eq!(child["stream"], "damaged");
        assert_eq!(child["stream_problem"], "truncated frame");
        assert_eq!(keys(&child["totals"]["by_memory"]), Vec::<&str>::new());
    }

    #[test]
    fn python_frames_say_so() {
        let mut model = fixture::model();
        let frames = &mut model.processes[0].sites[1].frames;
        frames[1].python = true;
        frames[1].module = None;
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        let frames = &v["processes"][0]["sites"][1]["frames"];
        assert_eq!(frames[1]["python"], true);
        assert_eq!(frames[1]["module"], Value::Null);
        assert_eq!(
            keys(&frames[1]),
            sorted(vec![
                "function", "file", "line", "module", "address", "inlined", "python"
            ])
        );
        assert_eq!(frames[0].get("python"), None, "native frames leave it out");
    }

    #[test]
    fn heap_fields_follow_the_contract() {
        use crate::analysis::model::HeapVerdict;
        let mut model = fixture::model();
        model.processes[0].heap = Some(fixture::heap_report());
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        let h = &v["processes"][0]["heap"];
        assert_eq!(
            keys(h),
            sorted(vec![
                "verdict", "latest", "arenas", "readings", "span_ns", "series"
            ])
        );
        assert_eq!(h["verdict"], "fragmented");
        assert_eq!(h["readings"], 3);
        assert_eq!(h["span_ns"], 2_500_000_000u64);
        let figures = sorted(vec![
            "at_ns",
            "arenas",
            "system_bytes",
            "arena_bytes",
            "mmap_bytes",
            "mmap_chunks",
            "free_bytes",
            "free_chunks",
            "fastbin_bytes",
            "top_bytes",
            "hole_bytes",
            "free_permille",
            "live_bytes",
            "live_blocks",
            "rss_bytes",
            "uss_bytes",
        ]);
        assert_eq!(keys(&h["latest"]), figures);
        assert_eq!(h["series"].as_array().unwrap().len(), 2);
        assert_eq!(keys(&h["series"][0]), figures);
        assert_eq!(h["series"][1], h["latest"]);
        assert_eq!(h["latest"]["free_bytes"], 27u64 << 20);
        assert_eq!(h["latest"]["free_permille"], 500);
        assert_eq!(
            keys(&h["arenas"][0]),
            sorted(vec![
                "system_bytes",
                "free_bytes",
                "free_chunks",
                "fastbin_bytes",
                "top_bytes"
            ])
        );
        for (verdict, name) in [
            (HeapVerdict::Retained, "retained"),
            (HeapVerdict::Compact, "compact"),
            (HeapVerdict::Unknown, "unknown"),
        ] {
            assert_eq!(serde_json::to_value(verdict).unwrap(), name);
        }
    }

    #[test]
    fn gpu_fields_follow_the_contract() {
        let mut out = Vec::new();
        JsonReport::default()
            .render(&fixture::gpu_model(), &mut out)
            .unwrap();
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        let p = &v["processes"][2];
        let site = &p["sites"][1];
        assert_eq!(site["memory"], "device");
        assert_eq!(site["pool"], "pytorch-caching");
        assert_eq!(site["device"], 0);
        assert_eq!(site["space"], "pointer");
        assert_eq!(site["owned"], true);
        assert_eq!(site["during_capture"], false);
        let reservation = &p["sites"][0];
        assert_eq!(reservation["space"], "reservation");
        assert_eq!(reservation["owned"], false);
        assert_eq!(p["sites"][2]["during_capture"], true);
        assert_eq!(p["sites"][3]["device"], Value::Null, "pinned host memory");
        assert_eq!(keys(&p["totals"]["by_memory"]), vec!["device", "pinned"]);

        let gpu = &p["gpu"];
        assert_eq!(
            keys(gpu),
            sorted(vec![
                "devices",
                "pools",
                "stream_pools",
                "captures",
                "torch"
            ])
        );
        assert_eq!(gpu["torch"], Value::Null, "no PyTorch record");
        assert_eq!(gpu["captures"], 2);
        let device = &gpu["devices"][0];
        assert_eq!(
            keys(device),
            sorted(vec![
                "device",
                "by_memory",
                "reserved_address_bytes",
                "mapped_bytes",
                "registered_bytes",
                "imported_handles",
                "retained_handles"
            ])
        );
        assert_eq!(device["device"], 0);
        assert_eq!(device["reserved_address_bytes"], 4u64 << 30);
        assert_eq!(keys(&device["by_memory"]), vec!["device"]);
        assert_eq!(
            keys(&device["by_memory"]["device"]),
            sorted(vec![
                "outstanding_bytes",
                "outstanding_count",
                "allocations",
                "allocated_bytes",
                "temporary"
            ])
        );
        assert_eq!(gpu["devices"][1]["device"], Value::Null);
        let pool = &gpu["pools"][0];
        assert_eq!(
            keys(pool),
            sorted(vec![
                "pool",
                "memory",
                "device",
                "outstanding_bytes",
                "outstanding_count",
                "allocations",
                "allocated_bytes",
                "temporary"
            ])
        );
        assert_eq!(pool["pool"], "pytorch-caching");
        assert_eq!(pool["memory"], "device");
        assert_eq!(pool["device"], 0);
        assert_eq!(pool["outstanding_bytes"], 1u64 << 30);
        let stream_pool = &gpu["stream_pools"][0];
        assert_eq!(
            keys(stream_pool),
            sorted(vec![
                "handle",
                "device",
                "created_by_program",
                "destroyed",
                "reserved_bytes",
                "used_bytes",
                "readings",
                "series"
            ])
        );
        assert_eq!(stream_pool["handle"], "0x5555aaaa0000");
        assert_eq!(stream_pool["created_by_program"], true);
        assert_eq!(stream_pool["readings"], 12);
    }

    #[test]
    fn torch_fields_follow_the_contract() {
        let mut model = fixture::gpu_model();
        let gpu = model.processes[2].gpu.as_mut().unwrap();
        gpu.torch = Some(crate::analysis::torch_model::sample());
        gpu.stream_pools[0].series = vec![crate::analysis::torch_model::StreamPoolPoint {
            at_ns: 5,
            reserved_bytes: 32 << 20,
            used_bytes: 8 << 20,
        }];
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        let gpu = &v["processes"][2]["gpu"];
        assert_eq!(
            keys(&gpu["stream_pools"][0]["series"][0]),
            sorted(vec!["at_ns", "reserved_bytes", "used_bytes"])
        );
        let t = &gpu["torch"];
        assert_eq!(
            keys(t),
            sorted(vec!["readings", "span_ns", "blocks", "devices", "pools"])
        );
        assert_eq!(
            keys(&t["blocks"]),
            sorted(vec![
                "allocations",
                "frees",
                "live_blocks",
                "live_bytes",
                "unsized_live_blocks",
                "untracked_blocks",
                "untracked_bytes",
                "unknown_frees"
            ])
        );
        let figures = sorted(vec![
            "at_ns",
            "reserved_bytes",
            "allocated_bytes",
            "requested_bytes",
            "awaiting_free_bytes",
            "segments",
            "allocated_blocks",
            "free_bytes",
            "free_blocks",
            "largest_free_bytes",
            "external_fragmentation_permille",
            "inactive_split_bytes",
        ]);
        assert_eq!(
            keys(&t["devices"][0]),
            sorted(vec!["device", "latest", "series"])
        );
        assert_eq!(keys(&t["devices"][0]["latest"]), figures);
        let pool = &t["pools"][0];
        assert_eq!(
            keys(pool),
            sorted(vec![
                "device",
                "pool",
                "pool_id",
                "expandable",
                "streams",
                "latest",
                "series"
            ])
        );
        assert_eq!(pool["pool"], "pytorch-caching");
        assert_eq!(pool["pool_id"], serde_json::json!([0, 0]));
        assert_eq!(keys(&pool["series"][1]), figures);
        assert_eq!(pool["latest"]["external_fragmentation_permille"], 900);
        assert_eq!(t["pools"][1]["streams"], serde_json::json!(["0x5a5a0000"]));
    }

    #[test]
    fn space_names() {
        use crate::analysis::model::Space;
        use leakscope_protocol::GpuSpace;
        for space in [
            GpuSpace::Pointer,
            GpuSpace::Handle,
            GpuSpace::Mapping,
            GpuSpace::Reservation,
            GpuSpace::Registration,
        ] {
            let ours = Space::from_gpu(space).unwrap();
            assert_eq!(serde_json::to_value(ours).unwrap(), space.name());
            assert_eq!(ours.name(), space.name());
        }
        assert_eq!(Space::from_gpu(GpuSpace::Pool), None);
        assert_eq!(serde_json::to_value(Space::Block).unwrap(), "block");
        assert_eq!(Space::Block.name(), "block");
    }

    #[test]
    fn stream_names() {
        use crate::analysis::model::StreamStatus;
        for (status, name) in [
            (StreamStatus::Clean, "clean"),
            (StreamStatus::Exec, "exec"),
            (StreamStatus::CutOff, "cut_off"),
            (StreamStatus::Open, "open"),
            (StreamStatus::Damaged, "damaged"),
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), name);
        }
    }

    #[test]
    fn compact_and_pretty_carry_the_same_model() {
        let (compact, a) = parse(JsonReport { pretty: false });
        let (pretty, b) = parse(JsonReport::default());
        assert_eq!(a, b);
        assert_eq!(compact.lines().count(), 1);
        assert!(pretty.lines().count() > 1);
    }
    #[test]
    fn aging_fields_follow_the_contract() {
        use crate::analysis::aging_model::*;
        use crate::analysis::trend::shape::Shape;
        let trend = TrendReport {
            slope_bytes_per_hour: 4096.0,
            ci_low: 1024.0,
            ci_high: 8192.0,
            p_value: 0.001,
            significant: true,
            shape: Shape::Steps,
            basis: None,
        };
        let tested = Tested {
            trend: Some(trend),
            series: Some(SeriesReport {
                step_s: 10.0,
                start_s: 60.0,
                values: vec![1.0, 2.0],
            }),
        };
        let mut model = fixture::model();
        model.processes[0].sites[1].aging = Tested {
            trend: Some(TrendReport {
                basis: Some(Basis::Outlived),
                ..trend
            }),
            ..tested.clone()
        };
        model.processes[0].aging = Some(ProcessAging {
            step_s: 10.0,
            points: 2,
            stored_series: 3,
            stored_runs: 4,
            host: tested.clone(),
            devices: vec![],
            pools: vec![PoolAging {
                pool: "malloc".into(),
                memory: crate::analysis::model::Memory::Host,
                device: None,
                outstanding_bytes: 5,
                tested: Tested::default(),
            }],
            uss: Some(ResidentAging {
                latest_bytes: 9,
                window_s: 60.0,
                tested: Tested::default(),
            }),
            rss: None,
            exhaustion: vec![crate::analysis::aging::exhaustion::at_rate(
                ExhaustionOf::Gpu { index: 1 },
                8192,
                &trend,
            )],
        });
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let site = &v["processes"][0]["sites"][1];
        assert_eq!(
            keys(&site["trend"]),
            sorted(vec![
                "slope_bytes_per_hour",
                "ci_low",
                "ci_high",
                "p_value",
                "significant",
                "shape",
                "basis"
            ])
        );
        assert_eq!(site["trend"]["shape"], "steps");
        assert_eq!(site["trend"]["basis"], "outlived");
        assert_eq!(site["trend"]["significant"], true);
        assert_eq!(
            keys(&site["series"]),
            sorted(vec!["step_s", "start_s", "values"])
        );
        let aging = &v["processes"][0]["aging"];
        assert_eq!(
            keys(aging),
            sorted(vec![
                "step_s",
                "points",
                "stored_series",
                "stored_runs",
                "host",
                "devices",
                "pools",
                "uss",
                "rss",
                "exhaustion"
            ])
        );
        assert_eq!(keys(&aging["host"]), sorted(vec!["trend", "series"]));
        // Only a site's trend names its basis.
        assert!(aging["host"]["trend"].get("basis").is_none());
        assert_eq!(
            keys(&aging["pools"][0]),
            sorted(vec![
                "pool",
                "memory",
                "device",
                "outstanding_bytes",
                "trend"
            ])
        );
        assert_eq!(aging["pools"][0]["trend"], Value::Null);
        assert_eq!(
            keys(&aging["uss"]),
            sorted(vec!["latest_bytes", "window_s", "trend"])
        );
        let e = &aging["exhaustion"][0];
        assert_eq!(e["memory"], "gpu");
        assert_eq!(e["index"], 1);
        assert_eq!(e["hours"], 2.0);
        assert_eq!(e["hours_low"], 1.0);
        assert_eq!(e["hours_high"], 8.0);
        model.aging = Some(RunAging {
            alpha: 0.01,
            q: 0.1,
            warmup_s: 60.0,
            tests: 7,
            significant: 1,
            host: Tested::default(),
            devices: vec![],
            exhaustion: vec![],
            machine: None,
            host_used: Some(MachineAging {
                index: None,
                latest_bytes: 10,
                window_s: 60.0,
                tested: Tested::default(),
            }),
            gpus_used: vec![MachineAging {
                index: Some(0),
                latest_bytes: 11,
                window_s: 60.0,
                tested: Tested::default(),
            }],
        });
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            keys(&v["aging"]),
            sorted(vec![
                "alpha",
                "q",
                "warmup_s",
                "tests",
                "significant",
                "host",
                "devices",
                "exhaustion",
                "machine",
                "host_used",
                "gpus_used"
            ])
        );
        assert_eq!(
            keys(&v["aging"]["gpus_used"][0]),
            sorted(vec!["index", "latest_bytes", "window_s", "trend"])
        );
        // Without --series, no `series` key at all.
        model.processes[0].sites[1].aging.series = None;
        let mut out = Vec::new();
        JsonReport::default().render(&model, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["processes"][0]["sites"][1].get("series").is_none());
    }
}
