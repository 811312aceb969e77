//! The proxy's data path without a cluster, for benchmarks: one service
//! (cluster IP and port, endpoints given on the command line) served in
//! iptables or userspace mode inside a network namespace, or N synthetic
//! services synced to measure iptables-restore times. Not a product
//! binary: `flotilla proxy` is.
//!
//! serve:  dataplane serve --netns /run/netns/N --mode iptables|nftables|userspace \
//!             --vip 10.96.0.1:80 --endpoint 10.251.1.2:8080 [--endpoint ...]
//! sync:   dataplane sync --netns /run/netns/N --services 10000 [--backend legacy|nft|nftables]
//!         (legacy and nft: iptables mode with that iptables; nftables: nftables mode)

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use flotilla_proxy::model::{Ep, Proto, SvcPort};
use flotilla_proxy::nftables::{self, rules::nftables_mode, rules::Renderer};
use flotilla_proxy::{iptables, rules, userspace};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn port(key: String, vip: SocketAddr, eps: Vec<SocketAddr>) -> SvcPort {
    let ip = match vip.ip() {
        std::net::IpAddr::V4(v) => v,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    SvcPort {
        key,
        proto: Proto::Tcp,
        cluster_ip: ip,
        port: vip.port(),
        node_port: None,
        external_ips: vec![],
        lb_ips: vec![],
        affinity: None,
        external_local: false,
        internal_local: false,
        endpoints: eps
            .into_iter()
            .filter_map(|e| match e {
                SocketAddr::V4(v) => Some(Ep {
                    ip: *v.ip(),
                    port: v.port(),
                    local: false,
                }),
                SocketAddr::V6(_) => None,
            })
            .collect(),
    }
}

fn synthetic(n: usize, bump: usize) -> Vec<SvcPort> {
    (0..n)
        .map(|i| {
            let vip = SocketAddr::from((Ipv4Addr::from(0x0a60_0000u32 + i as u32 + 1), 80));
            let ep = |k: u32| {
                let extra = if i == 0 { bump as u32 * 2 } else { 0 };
                SocketAddr::from((
                    Ipv4Addr::from(0x0af4_0000u32 + (i as u32) * 2 + k + extra),
                    8080,
                ))
            };
            port(format!("bench/svc-{i}:http"), vip, vec![ep(0), ep(1)])
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let ns = arg(&args, "--netns").map(PathBuf::from);
    let native = arg(&args, "--backend").as_deref() == Some("nftables");
    let backend = match arg(&args, "--backend").as_deref() {
        Some("legacy") => iptables::Backend::Legacy,
        Some("nft") => iptables::Backend::Nft,
        Some("nftables") | None => iptables::Backend::detect(ns.as_deref()).await,
        Some(b) => return Err(format!("--backend {b}: legacy, nft or nftables").into()),
    };
    match args.get(1).map(String::as_str) {
        Some("sync") => {
            let n: usize = arg(&args, "--services").unwrap_or("1000".into()).parse()?;
            // The services are made before each timing: a timing covers
            // rendering the rules for all of them, diffing and writing.
            let (mut ipt, mut nft) = (
                iptables::Writer::new(ns.clone(), backend),
                nftables::Writer::new(ns.clone()),
            );
            let mut renderer = Renderer::default();
            let mut sync = async |ports: &[flotilla_proxy::model::SvcPort]| {
                if native {
                    nft.sync(renderer.render(ports, None)).await
                } else {
                    ipt.sync(rules::iptables_mode(ports, None)).await
                }
            };
            let ports = synthetic(n, 0);
            let t = Instant::now();
            let s = sync(&ports).await?;
            let full = t.elapsed();
            let (mut changes, mut kernel) = (Vec::new(), Vec::new());
            for k in 1..=5 {
                let ports = synthetic(n, k);
                let t = Instant::now();
                let s = sync(&ports).await?;
                changes.push(t.elapsed().as_secs_f64() * 1000.0);
                kernel.push(s.kernel.as_secs_f64() * 1000.0);
            }
            changes.sort_by(f64::total_cmp);
            kernel.sort_by(f64::total_cmp);
            let ports = synthetic(n, 0);
            let (name, rules, elements) = if native {
                let (r, e) = nftables_mode(&ports, None).size();
                ("nftables".to_string(), r, e)
            } else {
                let r = rules::iptables_mode(&ports, None).rule_count();
                (format!("{backend:?}"), r, 0)
            };
            println!(
                "backend={name} services={n} rules={rules} elements={elements} full_sync_ms={:.0} one_change_ms_median={:.1} one_change_ms_max={:.1} one_change_kernel_ms_median={:.1} payload_bytes={}",
                full.as_secs_f64() * 1000.0,
                changes[changes.len() / 2],
                changes[changes.len() - 1],
                kernel[kernel.len() / 2],
                s.payload_bytes
            );
            if !args.iter().any(|a| a == "--keep") {
                flotilla_proxy::cleanup(ns.as_deref()).await?;
            }
        }
        Some("serve") => {
            let vip: SocketAddr = arg(&args, "--vip").ok_or("--vip")?.parse()?;
            let eps: Vec<SocketAddr> = args
                .windows(2)
                .filter(|w| w[0] == "--endpoint")
                .map(|w| w[1].parse())
                .collect::<Result<_, _>>()?;
            let p = vec![port("bench/web:http".into(), vip, eps)];
            let mut w = iptables::Writer::new(ns.clone(), backend);
            let _keep = match arg(&args, "--mode").as_deref() {
                Some("nftables") => {
                    nftables::Writer::new(ns.clone())
                        .sync(nftables_mode(&p, None))
                        .await?;
                    None
                }
                Some("userspace") => {
                    let mut u = userspace::Userspace::new(ns.as_deref(), 2)?;
                    let l = u.apply(&p).await;
                    w.sync(rules::userspace_mode(&p, &l)).await?;
                    Some(u)
                }
                _ => {
                    w.sync(rules::iptables_mode(&p, None)).await?;
                    None
                }
            };
            println!("ready");
            tokio::signal::ctrl_c().await?;
            flotilla_proxy::cleanup(ns.as_deref()).await?;
        }
        _ => return Err("usage: dataplane serve|sync ...".into()),
    }
    Ok(())
}
