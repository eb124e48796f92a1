//! The shipped image is reproducible: the same inputs give the same bytes.

use chaos_tests::fixture;

#[test]
fn building_the_image_twice_gives_the_same_bytes() {
    let fixture = fixture();
    let dir = xtask::build_dir().join("tests");
    let mut images = Vec::new();
    for name in ["twice-a.cpio.gz", "twice-b.cpio.gz"] {
        let spec = xtask::image::base_spec(&fixture.kernel, &fixture.binaries).unwrap();
        let path = dir.join(name);
        xtask::image::write(&spec, &path).unwrap();
        images.push(std::fs::read(&path).unwrap());
    }
    assert!(images[0].len() > 1000, "suspiciously small image");
    assert!(
        images[0] == images[1],
        "two builds of the same image differ"
    );
    let listing = mkimage::list(&images[0][..]).unwrap();
    let names: Vec<String> = listing.iter().map(|e| e.to_string()).collect();
    for wanted in [
        "init",
        "dev/console",
        "etc/hosts -> /run/chaos/hosts",
        // init under another name.
        "sbin/certaintyd -> /init",
        "etc/chaos/services/certaintyd",
        "etc/chaos/manifest",
        // The kernel the image is for, modules or none.
        "etc/chaos/kernel-release",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(wanted)),
            "{wanted} missing from the image:\n{}",
            names.join("\n")
        );
    }
}

#[test]
fn a_cold_and_a_warm_member_cache_give_the_same_image() {
    let fixture = fixture();
    let dir = xtask::build_dir().join("tests");
    let cache_dir = dir.join("cold-warm-cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let cache = mkimage::MemberCache::open(&cache_dir).unwrap();
    let spec = xtask::image::base_spec(&fixture.kernel, &fixture.binaries).unwrap();
    let write = |name: &str, cache: Option<&mkimage::MemberCache>| {
        let path = dir.join(name);
        let written = xtask::image::write_with(&spec, &path, cache).unwrap();
        (written.stats, std::fs::read(&path).unwrap())
    };
    let (cold, cold_bytes) = write("cold.cpio.gz", Some(&cache));
    let (warm, warm_bytes) = write("warm.cpio.gz", Some(&cache));
    let (_, uncached_bytes) = write("uncached.cpio.gz", None);
    assert!(cold.members > 1, "one member: nothing was split");
    assert_eq!(cold.compressed, cold.members, "a cold cache compresses all");
    assert_eq!(warm.compressed, 0, "a warm cache compresses nothing");
    assert!(cold_bytes == warm_bytes, "cold and warm builds differ");
    assert!(cold_bytes == uncached_bytes, "the cache changed the image");
    let _ = std::fs::remove_dir_all(&cache_dir);
}
