//! The `ec2` provider against moto's EC2 server on a free port. scripts/test installs moto into
//! a venv and names its `moto_server` in `MOTO_SERVER`; without it the test is skipped loudly,
//! except in CI (`CI=true`), where it must run.
//!
//! EC2's `DescribeInstances` lags behind `RunInstances`; moto doesn't. [`Lag`] is a thin HTTP
//! proxy in front of moto that, while told to, answers `DescribeInstances` with no
//! reservations: the listing of an EC2 that hasn't caught up. Everything else goes to moto
//! unchanged, and the proxy counts the `RunInstances` calls it passes.

#![cfg(feature = "ec2")]
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use autoscaler::config::{Config, Ec2Config, ProviderKind};
use autoscaler::provider::ec2::{Ec2Provider, TAG_FLEET, TAG_PHASE};
use autoscaler::provider::{Phase, Provider};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::{Filter, HttpTokensState};
use testkit::autoscaler::{Autoscaler, haproxy_options};
use testkit::haproxy::Haproxy;
use testkit::moto::{self, Moto};
use testkit::process::{free_addr, temp_dir};
use testkit::{LONG_DEADLINE, eventually_blocking};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_describe_terminate_on_moto() {
    let Some(bin) = moto::find() else { return };
    let moto = Moto::start(&bin);
    let endpoint = moto.endpoint.clone();
    let tmp = temp_dir("ec2");
    let template = tmp.path().join("user-data.sh.tmpl");
    std::fs::write(
        &template,
        "#!/bin/sh\nexec /usr/local/bin/tracker --listen 0.0.0.0:@PORT@ \
         --admin-listen 0.0.0.0:@ADMIN_PORT@ # fleet @FLEET@\n",
    )
    .unwrap();
    let mut ec2 = Ec2Config {
        region: "eu-west-1".into(),
        endpoint_url: endpoint,
        instance_type: "t3.micro".into(),
        user_data_template: template,
        launch_journal: tmp.path().join("launches.json"),
        ..Ec2Config::default()
    };
    // Static credentials for moto; production uses the standard chain.
    let sdk = Ec2Provider::sdk_loader(&ec2)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    let raw = aws_sdk_ec2::Client::new(&sdk);
    let image = raw.describe_images().send().await.unwrap();
    ec2.ami = image.images()[0].image_id().unwrap().to_string();
    let subnets = raw.describe_subnets().send().await.unwrap();
    ec2.subnet_id = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let config = Config {
        fleet: "motofleet".into(),
        provider: ProviderKind::Ec2,
        ec2,
        ..Config::default()
    };
    config.validate().unwrap();
    let provider = Ec2Provider::with_sdk_config(&config, &sdk).await.unwrap();

    assert!(provider.list().await.unwrap().is_empty());
    let a = provider.launch("motofleet-token-a").await.unwrap();
    assert_eq!(a.phase, Phase::Launching);
    assert!(a.alive);
    assert_eq!(a.addr.port(), 8000);
    assert_eq!(a.admin.port(), 8001);

    // A retried launch with the same token: the same instance, no second one.
    let again = provider.launch("motofleet-token-a").await.unwrap();
    assert_eq!(again.id, a.id);
    assert_eq!(provider.list().await.unwrap().len(), 1);

    // Tags and user data as launched.
    let d = raw
        .describe_instances()
        .instance_ids(&a.id)
        .send()
        .await
        .unwrap();
    let inst = &d.reservations()[0].instances()[0];
    let tag = |k: &str| {
        inst.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(tag(TAG_FLEET).as_deref(), Some("motofleet"));
    assert_eq!(tag(TAG_PHASE).as_deref(), Some("launching"));
    // IMDSv2 only: session tokens required, one hop.
    let imds = inst.metadata_options().expect("metadata options");
    assert_eq!(imds.http_tokens(), Some(&HttpTokensState::Required));
    assert_eq!(imds.http_put_response_hop_limit(), Some(1));
    // Listed by EC2: no longer in the journal.
    assert!(provider.journal().entries().await.is_empty());
    let ud = raw
        .describe_instance_attribute()
        .instance_id(&a.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = ud.user_data().and_then(|v| v.value()).unwrap_or_default();
    use base64::Engine as _;
    let text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(
        text.contains("--listen 0.0.0.0:8000") && text.contains("fleet motofleet"),
        "{text}"
    );

    // Another fleet's instance is not ours.
    raw.run_instances()
        .image_id(&config.ec2.ami)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let b = provider.launch("motofleet-token-b").await.unwrap();
    let listed = provider.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(listed.len(), 2, "{ids:?}");
    assert!(ids.contains(&a.id.as_str()) && ids.contains(&b.id.as_str()));

    // Phases are tags: a new provider (a restarted autoscaler) sees them.
    provider.set_phase(&a.id, Phase::Draining).await.unwrap();
    let fresh = Ec2Provider::with_sdk_config(&config, &sdk).await.unwrap();
    let a2 = fresh
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == a.id)
        .unwrap();
    assert_eq!(a2.phase, Phase::Draining);

    // Terminate: gone from the fleet; terminating again is fine.
    provider.terminate(&a.id).await.unwrap();
    provider.terminate(&a.id).await.unwrap();
    let left: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, vec![b.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_an_error_not_a_hang() {
    let tmp = temp_dir("ec2-down");
    let template = tmp.path().join("user-data");
    std::fs::write(&template, "#!/bin/sh\n").unwrap();
    // Nothing listens on this port: every call fails fast, retries included.
    let ec2 = Ec2Config {
        region: "eu-west-1".into(),
        endpoint_url: format!("http://{}", free_addr()),
        ami: "ami-1".into(),
        instance_type: "t3.micro".into(),
        subnet_id: "subnet-1".into(),
        user_data_template: template,
        launch_journal: tmp.path().join("launches.json"),
        ..Ec2Config::default()
    };
    let sdk = Ec2Provider::sdk_loader(&ec2)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let config = Config {
        provider: ProviderKind::Ec2,
        ec2,
        ..Config::default()
    };
    let provider = Ec2Provider::with_sdk_config(&config, &sdk).await.unwrap();
    let started = std::time::Instant::now();
    let err = provider.list().await.unwrap_err();
    assert!(err.to_string().contains("DescribeInstances"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(25));
}

/// A proxy in front of moto that can hide every instance from `DescribeInstances`.
#[derive(Clone)]
struct Lag {
    moto: std::net::SocketAddr,
    hidden: Arc<AtomicBool>,
    run_instances: Arc<AtomicUsize>,
}

impl Lag {
    /// Serves on a free port; returns its endpoint URL.
    async fn start(moto_url: &str) -> (Self, String) {
        let moto = moto_url
            .trim_start_matches("http://")
            .parse()
            .expect("moto address");
        let lag = Self {
            moto,
            hidden: Arc::new(AtomicBool::new(false)),
            run_instances: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = lag.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let state = state.clone();
            async move { state.forward(req).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (lag, url)
    }

    async fn forward(&self, req: axum::extract::Request) -> axum::response::Response {
        use http_body_util::{BodyExt, Full};
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let form = String::from_utf8_lossy(&body);
        let describe = form.contains("Action=DescribeInstances");
        if form.contains("Action=RunInstances") {
            self.run_instances.fetch_add(1, Ordering::SeqCst);
        }
        let stream = tokio::net::TcpStream::connect(self.moto).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut out = hyper::Request::builder()
            .method(parts.method)
            .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        for (k, v) in &parts.headers {
            out = out.header(k, v);
        }
        let resp = sender
            .send_request(out.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (mut head, body) = resp.into_parts();
        let mut bytes = body.collect().await.unwrap().to_bytes().to_vec();
        // An empty listing is already what a lagging EC2 answers (moto then writes
        // `<reservationSet/>`): only a listing with reservations is emptied.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if describe
            && self.hidden.load(Ordering::SeqCst)
            && let (Some(start), Some(end)) = (
                text.find("<reservationSet>"),
                text.rfind("</reservationSet>"),
            )
        {
            bytes = format!("{}<reservationSet>{}", &text[..start], &text[end..]).into_bytes();
            head.headers.remove(hyper::header::CONTENT_LENGTH);
            head.headers.remove(hyper::header::TRANSFER_ENCODING);
        }
        axum::response::Response::from_parts(head, axum::body::Body::from(bytes))
    }
}

/// The fleet's instances as moto itself lists them (not through the lagging proxy).
async fn fleet_instances(raw: &aws_sdk_ec2::Client, fleet: &str) -> Vec<String> {
    let out = raw
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_FLEET}"))
                .values(fleet)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

// Not a tokio test: the autoscaler's helpers block (they run a runtime of their own), so the
// proxy and the SDK calls run on this runtime's threads while the test thread waits.
#[test]
fn a_launch_ec2_does_not_list_yet_is_counted_and_never_launched_twice() {
    let Some(bin) = moto::find() else { return };
    let moto = Moto::start(&bin);
    let moto_url = moto.endpoint.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (lag, lag_url) = rt.block_on(Lag::start(&moto_url));
    // EC2 hasn't caught up: the listing shows nothing of what gets launched.
    lag.hidden.store(true, Ordering::SeqCst);

    let (raw, ami, subnet) = rt.block_on(async {
        let sdk = Ec2Provider::sdk_loader(&Ec2Config {
            region: "eu-west-1".into(),
            endpoint_url: moto_url.clone(),
            ..Ec2Config::default()
        })
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
        let raw = aws_sdk_ec2::Client::new(&sdk);
        let ami = raw.describe_images().send().await.unwrap().images()[0]
            .image_id()
            .unwrap()
            .to_string();
        let subnet = raw.describe_subnets().send().await.unwrap().subnets()[0]
            .subnet_id()
            .unwrap()
            .to_string();
        (raw, ami, subnet)
    });
    let instances = |fleet: &str| rt.block_on(fleet_instances(&raw, fleet)).len();

    let haproxy = Haproxy::start(&[], &haproxy_options());
    let aws_env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let mut autoscaler = Autoscaler::start_with_env(aws_env, |state| {
        let dir = state.parent().unwrap();
        let template = dir.join("user-data.sh.tmpl");
        std::fs::write(&template, "#!/bin/sh\n# @FLEET@ @PORT@ @ADMIN_PORT@\n").unwrap();
        format!(
            r#"fleet = "lagfleet"
poll_interval_ms = 300
provider = "ec2"

[scaling]
min_instances = 1
max_instances = 3
launch_timeout_secs = 300

[haproxy]
socket = "{socket}"

[tracker]
http_timeout_ms = 100

[ec2]
region = "eu-west-1"
endpoint_url = "{lag_url}"
ami = "{ami}"
instance_type = "t3.micro"
subnet_id = "{subnet}"
user_data_template = "{template}"
launch_journal = "{journal}"
"#,
            socket = haproxy.socket().display(),
            template = template.display(),
            journal = dir.join("launches.json").display(),
        )
    });
    let journal = autoscaler.dir().join("launches.json");
    let ticks = |a: &Autoscaler| a.status().and_then(|s| s["ticks"].as_u64()).unwrap_or(0);
    let wait_ticks = |a: &Autoscaler, n: u64| {
        let at = ticks(a);
        eventually_blocking("more ticks", LONG_DEADLINE, || {
            (ticks(a) >= at + n).then_some(())
        });
    };
    eventually_blocking("the first launch", LONG_DEADLINE, || {
        (lag.run_instances.load(Ordering::SeqCst) >= 1).then_some(())
    });
    wait_ticks(&autoscaler, 8);
    assert_eq!(instances("lagfleet"), 1);
    let status = autoscaler.status().unwrap();
    let last = status["decisions"].as_array().unwrap().last().unwrap()[1].clone();
    assert_eq!(
        last["capacity"], 1,
        "the unlisted launch is capacity: {last}"
    );

    // A restart while EC2 still doesn't list it: the journal makes it count.
    autoscaler.kill();
    autoscaler.launch();
    wait_ticks(&autoscaler, 8);
    assert_eq!(
        lag.run_instances.load(Ordering::SeqCst),
        1,
        "{}",
        autoscaler.log()
    );
    assert_eq!(instances("lagfleet"), 1);

    // EC2 catches up: the instance comes from the listing, the journal forgets it.
    lag.hidden.store(false, Ordering::SeqCst);
    eventually_blocking("the journal emptied", LONG_DEADLINE, || {
        let text = std::fs::read_to_string(&journal).ok()?;
        let entries: serde_json::Value = serde_json::from_str(&text).ok()?;
        (entries.as_array()?.is_empty()).then_some(())
    });
    wait_ticks(&autoscaler, 5);
    assert_eq!(lag.run_instances.load(Ordering::SeqCst), 1);
    assert_eq!(instances("lagfleet"), 1);
}
