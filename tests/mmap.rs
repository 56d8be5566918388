//! Scenario 4: anonymous mmap tracking: kept private and shared mappings, a hole unmapped
//! from the middle of a mapping, mremap grow (moving) and shrink, churn, a mapping partly
//! replaced by a `PROT_NONE` reservation, and a file-backed mapping and a `PROT_NONE`
//! reservation that must not be reported. valgrind does not track mmap, so the
//! expected bytes are computed here from the program's page size.

mod common;

use common::*;

#[test]
fn anonymous_mappings_are_tracked_exactly() {
    let work = Work::new("mmap");
    let prog = gcc(&work, &[&scenario("mmap.c")], "mmap", &[]);
    let rec = record_unchanged(&work, "rec", &prog, &[]);
    let stdout = text(&rec.output.stdout);
    let page: u64 = stdout
        .trim()
        .strip_prefix("page ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));

    let rep = report(&rec.dir);
    let p = rep.one("mmap", "exec");
    p.assert_complete();

    let by = |f: &str| {
        p.outstanding_where(|s| {
            s.frames.first().and_then(Frame::function_name) == Some(f) && s.memory == "mapped"
        })
    };
    for site in p.sites.iter().filter(|s| s.memory == "mapped") {
        assert_eq!(
            site.pool,
            "mmap",
            "mapped memory comes from the mmap pool: {}",
            site.describe()
        );
    }
    assert_eq!(by("map_keep"), (10 * page, 1), "{}", p.describe());
    assert_eq!(by("map_shared"), (3 * page, 1), "{}", p.describe());
    // The hole leaves two pieces; how many blocks that counts as is the collector's
    // business, the bytes are not.
    assert_eq!(by("map_with_hole").0, 6 * page, "{}", p.describe());
    assert!(by("map_with_hole").1 >= 1);
    // The mremap'd mapping is attributed to the mremap call; the blocker mapping in the
    // same function is unmapped again.
    assert_eq!(by("map_grow"), (12 * page, 1), "{}", p.describe());
    assert_eq!(by("map_shrink"), (2 * page, 1), "{}", p.describe());
    // map_churn maps through a static helper (inlined or not): match on any frame.
    assert_eq!(
        p.outstanding_where(|s| s.mentions("map_churn")),
        (0, 0),
        "{}",
        p.describe()
    );
    let churn_allocs: u64 = p
        .sites
        .iter()
        .filter(|s| s.mentions("map_churn"))
        .map(|s| s.allocations)
        .sum();
    assert_eq!(churn_allocs, 101, "map_churn maps 101 times");

    // The file-backed mapping is not anonymous memory: no site at all.
    assert!(
        !p.sites.iter().any(|s| s.mentions("map_file")),
        "a file-backed mapping was reported:\n{}",
        p.describe()
    );
    // Address space reserved with PROT_NONE is no memory: no site, and a reservation
    // placed over mapped memory releases what it covers.
    assert!(
        !p.sites.iter().any(|s| s.mentions("map_reserve")),
        "a PROT_NONE reservation was reported:\n{}",
        p.describe()
    );
    // map_decommit maps through the static helper too: match on any frame.
    assert_eq!(
        p.outstanding_where(|s| s.memory == "mapped" && s.mentions("map_decommit"))
            .0,
        4 * page,
        "{}",
        p.describe()
    );
    // Nothing else of the scenario is attributed mapped memory.
    let total = p.outstanding_where(|s| s.memory == "mapped" && s.in_file("mmap.c"));
    assert_eq!(total.0, 37 * page, "{}", p.describe());
}
