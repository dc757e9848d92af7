//! The `ec2` provider against moto's EC2 server on a free port. scripts/test installs moto into
//! a venv and names its `moto_server` in `MOTO_SERVER`; without it the test is skipped loudly,
//! except in CI (`CI=true`), where it must run.

#![cfg(feature = "ec2")]
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::time::Duration;

use autoscaler::config::{Config, Ec2Config, ProviderKind};
use autoscaler::provider::ec2::{Ec2Provider, TAG_FLEET, TAG_PHASE};
use autoscaler::provider::{Phase, Provider};
use aws_sdk_ec2::config::Credentials;
use testkit::moto::{self, Moto};
use testkit::process::{free_addr, temp_dir};

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
