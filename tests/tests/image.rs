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
        "sbin/certaintyd",
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
