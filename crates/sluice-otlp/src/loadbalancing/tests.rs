use super::*;

fn endpoints(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_ring_places_endpoints_where_the_collectors_ring_does() {
    // The Collector's TestPositionsForEndpoints (5 points an endpoint).
    let ring = Ring::with_points(&endpoints(&["endpoint-1", "endpoint-2"]), 5);
    let got: Vec<(u32, &str)> = ring
        .points
        .iter()
        .map(|(p, e)| (*p, ring.endpoints[*e].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1401, "endpoint-1"),
            (4175, "endpoint-1"),
            (10240, "endpoint-2"),
            (14133, "endpoint-1"),
            (15002, "endpoint-2"),
            (17836, "endpoint-1"),
            (21263, "endpoint-2"),
            (21667, "endpoint-1"),
            (26806, "endpoint-2"),
            (27020, "endpoint-2"),
        ]
    );
    // A duplicate endpoint adds nothing.
    assert_eq!(
        Ring::with_points(&endpoints(&["endpoint-1", "endpoint-1"]), 5)
            .points
            .len(),
        5
    );
    // The Collector's TestEndpointFor (100 points an endpoint).
    let ring = Ring::new(&endpoints(&["endpoint-1", "endpoint-2"]));
    assert_eq!(ring.points.len(), 200);
    for (key, owner) in [
        (&[1u8, 2, 0, 0][..], "endpoint-1"),
        (&[128, 128, 0, 0][..], "endpoint-2"),
        (b"ad-service-7".as_slice(), "endpoint-1"),
        (b"get-recommendations-1".as_slice(), "endpoint-2"),
    ] {
        assert_eq!(ring.endpoints[ring.owner(key).unwrap()], owner, "{key:?}");
    }
}

#[test]
fn a_change_of_backends_moves_only_the_share_it_must() {
    let three = Ring::new(&endpoints(&["gw-1:4317", "gw-2:4317", "gw-3:4317"]));
    let four = Ring::new(&endpoints(&[
        "gw-1:4317",
        "gw-2:4317",
        "gw-3:4317",
        "gw-4:4317",
    ]));
    let two = Ring::new(&endpoints(&["gw-1:4317", "gw-3:4317"]));
    let keys: Vec<[u8; 16]> = (0u64..30_000)
        .map(|i| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            k[8..].copy_from_slice(&i.to_le_bytes());
            k
        })
        .collect();
    let owner = |r: &Ring, k: &[u8]| r.endpoints[r.owner(k).unwrap()].clone();
    let mut per = std::collections::HashMap::new();
    let (mut moved_add, mut moved_remove) = (0u32, 0u32);
    for k in &keys {
        let o3 = owner(&three, k);
        *per.entry(o3.clone()).or_insert(0u32) += 1;
        let o4 = owner(&four, k);
        if o4 != o3 {
            // Adding a backend only takes keys to the new one.
            assert_eq!(o4, "gw-4:4317");
            moved_add += 1;
        }
        let o2 = owner(&two, k);
        if o3 != "gw-2:4317" {
            // Removing one only moves the keys it owned.
            assert_eq!(o2, o3);
        } else {
            moved_remove += 1;
        }
    }
    let n = keys.len() as f64;
    for (e, count) in &per {
        let share = f64::from(*count) / n;
        assert!((0.2..0.47).contains(&share), "{e} owns {share}");
    }
    assert!(
        (0.15..0.35).contains(&(f64::from(moved_add) / n)),
        "{moved_add}"
    );
    assert!(
        (0.2..0.47).contains(&(f64::from(moved_remove) / n)),
        "{moved_remove}"
    );
}

#[test]
fn successors_offer_every_endpoint_once_starting_at_the_owner() {
    let ring = Ring::new(&endpoints(&["a:1", "b:1", "c:1"]));
    for i in 0u32..100 {
        let key = i.to_be_bytes();
        let order = ring.successors(&key);
        assert_eq!(order.len(), 3);
        assert_eq!(order[0], ring.owner(&key).unwrap());
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        // `first` is the successors' first usable one.
        for skip in 0..3 {
            assert_eq!(
                ring.first(&key, |e| e != skip),
                order.iter().copied().find(|&e| e != skip)
            );
        }
    }
    assert!(Ring::new(&[]).successors(b"x").is_empty());
}

fn problems(config: serde_json::Value) -> Vec<String> {
    LoadBalancingExporterFactory {
        name: "loadbalancing",
    }
    .check("exporters.loadbalancing", &config)
    .into_iter()
    .map(|p| p.to_string())
    .collect()
}

#[test]
fn configs_it_cannot_honour_are_refused_with_the_key() {
    let ok = serde_json::json!({
        "routing_key": "traceID",
        "protocol": {"otlp": {"tls": {"insecure": true}, "timeout": "1s", "sending_queue": {"queue_size": 100}}},
        "resolver": {"static": {"hostnames": ["gw-1:4317", "gw-2:4317"]}}
    });
    assert_eq!(problems(ok), Vec::<String>::new());
    let dns = serde_json::json!({
        "protocol": {"otlp": {"tls": {"insecure": true}}},
        "resolver": {"dns": {"hostname": "gateways.observability.svc.cluster.local", "port": "4317", "interval": "2s", "timeout": "500ms"}}
    });
    assert_eq!(problems(dns), Vec::<String>::new());
    let k8s = problems(
        serde_json::json!({"protocol": {"otlp": {}}, "resolver": {"k8s": {"service": "gw.ns"}}}),
    );
    assert!(
        k8s[0].contains("resolver.k8s") && k8s[0].contains("resolver.dns"),
        "{k8s:?}"
    );
    let static_one = serde_json::json!({"static": {"hostnames": ["a:1"]}});
    assert!(
        problems(serde_json::json!({"protocol": {"otlp": {}}, "resolver": {}}))[0]
            .contains("needs `static` or `dns`")
    );
    assert!(
        problems(
            serde_json::json!({"protocol": {"otlp": {"endpoint": "x:1"}}, "resolver": static_one})
        )[0]
        .contains("protocol.otlp.endpoint")
    );
    assert!(
        problems(
            serde_json::json!({"routing_key": "streamID", "protocol": {"otlp": {}}, "resolver": static_one})
        )[0]
        .contains("streamID")
    );
    assert!(
        problems(
            serde_json::json!({"routing_key": "attributes", "protocol": {"otlp": {}}, "resolver": static_one})
        )[0]
        .contains("routing_attributes")
    );
    assert!(
        problems(
            serde_json::json!({"protocol": {"otlp": {"compression": "brotli"}}, "resolver": static_one})
        )[0]
        .contains("compression")
    );
    assert!(
        !problems(
            serde_json::json!({"protocol": {"otlp": {"sending_queue": {"queue_size": 0}}}, "resolver": static_one})
        )
        .is_empty()
    );
}
