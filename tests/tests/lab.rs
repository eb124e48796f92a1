//! A lab's morning under QEMU (xtask's lab bed): a switch in a network
//! namespace with the lab's own DHCP and DNS server (dnsmasq), `netboot
//! serve` in proxy-DHCP mode beside it, the head as a VM with the head
//! image, and four PCs built for the cluster: two BIOS and one UEFI that
//! boot from the network and one that boots from the ISO as a CD, with
//! nobody typing. All four join, mesh and run one `srun -N 4 hostname`,
//! which answers with the names the lab's DHCP server gave them. Then a PC
//! boots the ISO with a static `ip=` typed at the boot prompt and no DHCP,
//! and joins; a node told `chaos.head=` as a name in the lab's DNS finds
//! the head by it, and one told a name the DNS does not know yet says so
//! once, retries and joins when the name appears.

use chaos_agent::keys;
use chaos_contract::fact::{self, Fact};
use chaos_tests::*;
use xtask::lab::{self, Boot, BootPath, Morning};

/// Several VMs under TCG share two cores: a boot through firmware, PXE
/// and the join that takes longer than this is broken.
const LAB_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn a_labs_morning_pxe_and_cd_pcs_join_and_run_a_job_across_them() {
    require_root();
    let fixture = fixture();
    let started = std::time::Instant::now();
    let mut morning = Morning::start(&fixture.kernel, &fixture.binaries, "test").step();

    // What the lab serves and burns is a drone: the cluster's public keys
    // and key, never the head's private key or the munge key.
    let image = std::fs::File::open(&morning.artifacts.drone.path).unwrap();
    let names: Vec<String> = mkimage::list::list(image)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let identity = chaos_contract::paths::IDENTITY.trim_start_matches('/');
    for (file, carried) in [
        (keys::HEAD_PUB, true),
        (keys::CLUSTER_KEY, true),
        (keys::HEAD_KEY, false),
        (keys::MUNGE_KEY, false),
    ] {
        let path = format!("{identity}/{file}");
        assert_eq!(names.contains(&path), carried, "{path} in the drone image");
    }

    let mut pcs = morning.power_on().step();
    for pc in &mut pcs {
        lab::joined(&mut pc.vm, LAB_TIMEOUT)
            .unwrap_or_else(|e| panic!("{} ({}): {e:#}", pc.name, pc.path.name()));
    }
    let cd = pcs.iter().find(|pc| pc.path == BootPath::Cd).unwrap();
    assert!(
        cd.vm.console().contains("boot:"),
        "the CD PC never showed isolinux's prompt:\n{}",
        cd.vm.console()
    );
    // One job across the four, answered with each PC's name.
    morning.head.expect(&lab::srun_line(), LAB_TIMEOUT).step();
    // Each is meshed with the other three and the head.
    for pc in &mut pcs {
        let meshed = |f: &Fact| f.matches(fact::NODE, &[("state", "joined"), ("peers", "4")]);
        if !Fact::all(&pc.vm.console()).any(|f| meshed(&f)) {
            pc.vm
                .expect_fact(
                    fact::NODE,
                    &[("state", "joined"), ("peers", "4")],
                    STEP_TIMEOUT,
                )
                .step();
        }
    }

    // Every PC leased its address, under its name, from the lab's own
    // DHCP server; netboot's log names each network-booted PC's downloads.
    let leases = morning.lab.leases().step();
    let netboot = morning.lab.netboot.as_mut().unwrap();
    for pc in &pcs {
        let (_, address, name) = leases
            .iter()
            .find(|(mac, ..)| *mac == pc.mac)
            .unwrap_or_else(|| panic!("{} has no lease: {leases:?}", pc.name));
        assert_eq!(name, &pc.name, "{leases:?}");
        if pc.path != BootPath::Cd {
            for file in [netboot::boot::KERNEL, netboot::boot::INITRD] {
                netboot
                    .expect(&[&format!("http: {address} GET /{file} 200")], STEP_TIMEOUT)
                    .step();
            }
        }
    }
    println!(
        "lab: four PCs joined and ran a job {:.0} s after the test began",
        started.elapsed().as_secs_f64()
    );
    // Their part is done; the next PCs get the cores.
    drop(pcs);

    // A PC on a network without DHCP: the ISO with a static ip= typed at
    // its prompt. It finds the head by its beacon and asks no DHCP server.
    let fixed = "192.168.92.50";
    let typed = morning
        .lab
        .pc("static1", Boot::Cd(&morning.artifacts.iso))
        .step();
    let kernel = &morning.kernel.vmlinuz;
    let drone = &morning.artifacts.drone;
    // The lab's DNS names the head; late.lab is unknown until later.
    let named = morning
        .lab
        .pc("named1", Boot::Direct(kernel, drone, "chaos.head=head.lab"))
        .step();
    let late = morning
        .lab
        .pc("late1", Boot::Direct(kernel, drone, "chaos.head=late.lab"))
        .step();
    let mut typed_vm = boot(&typed.config);
    let mut named_vm = boot(&named.config);
    let mut late_vm = boot(&late.config);

    let joins_after = |vm: &mut xtask::vm::Vm, line: &str| {
        vm.expect(line, LAB_TIMEOUT).step();
        lab::joined(vm, LAB_TIMEOUT).step();
    };
    typed_vm.expect("boot:", LAB_TIMEOUT).step();
    typed_vm
        .type_keys(&format!("normal ip={fixed}:::255.255.255.0:static1::off\n"))
        .step();
    let head = lab::HEAD;
    joins_after(
        &mut typed_vm,
        &format!("found head {head}:7700 by its beacon"),
    );
    let console = typed_vm.console();
    assert!(
        console.contains(&format!("ip={fixed}:::255.255.255.0:static1::off")),
        "the typed ip= is not on the kernel command line:\n{console}"
    );
    assert!(
        !Fact::all(&console).any(|f| f.kind == fact::LEASE),
        "the PC with a static ip= asked for DHCP:\n{console}"
    );

    joins_after(&mut named_vm, &format!("head head.lab is at {head}:7700"));

    let unknown = "cannot resolve the head's name late.lab";
    late_vm.expect(unknown, LAB_TIMEOUT).step();
    morning.lab.name("late", head).step();
    joins_after(&mut late_vm, &format!("head late.lab is at {head}:7700"));
    // tyd's log says it once; the node's status screen shows it while it lasts.
    let console = late_vm.console();
    assert_eq!(
        console.matches(&format!("tyd: {unknown}")).count(),
        1,
        "the unknown name was not reported exactly once:\n{console}"
    );
    assert!(
        !console.contains("service tyd exited"),
        "tyd exited over a name it could not resolve:\n{console}"
    );
    morning
        .head
        .expect_all(
            &[
                "name=static1 state=up",
                "name=named1 state=up",
                "name=late1 state=up",
            ],
            STEP_TIMEOUT,
        )
        .step();
    println!(
        "lab: the test took {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
