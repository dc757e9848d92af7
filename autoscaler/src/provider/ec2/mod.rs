//! The `ec2` provider: tracker instances on EC2 (feature `ec2`).
//!
//! An instance belongs to the fleet by its `swarmtrack:fleet` tag and carries its phase in
//! `swarmtrack:phase` (and when it changed in `swarmtrack:phase-since`, unix seconds): the tags
//! are the autoscaler's memory, set atomically with the launch through `TagSpecifications`, so
//! an instance launched just before a crash is found by `DescribeInstances` after the restart.
//! `RunInstances` carries a client token, so a retried call returns the first call's instance,
//! and every launch is kept in the [`journal`] until `DescribeInstances` lists it, so neither
//! the next tick nor a restarted autoscaler launches again while EC2's listing lags. Instances
//! require IMDSv2 (session tokens, one network hop): a process on the tracker host can't be
//! turned into a proxy that reads the instance role's credentials.
//!
//! Credentials come from the standard AWS chain (env, profile, web identity, ECS, IMDS: an
//! instance profile on the control host). The SDK retries throttling and transient errors with
//! its standard backoff; every call is bounded by an operation timeout. HTTPS is rustls with
//! ring (no OpenSSL, no aws-lc build).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, ResourceType, Tag,
    TagSpecification,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine as _;

pub mod journal;

use std::collections::HashSet;
use std::sync::Arc;

use super::{Instance, Phase, Provider, ProviderError};
use crate::config::{Config, Ec2Config};
use journal::Journal;

/// Tag naming the fleet.
pub const TAG_FLEET: &str = "swarmtrack:fleet";
/// Tag holding the phase.
pub const TAG_PHASE: &str = "swarmtrack:phase";
/// Tag holding when the phase changed, unix seconds.
pub const TAG_PHASE_SINCE: &str = "swarmtrack:phase-since";
/// Tag holding the launch's client token: a retried launch finds its instance by it even
/// where `ClientToken` isn't honoured (moto ignores it).
pub const TAG_TOKEN: &str = "swarmtrack:launch-token";

/// Bound of one EC2 call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per call (the SDK's standard retry: exponential backoff with jitter, throttling
/// included).
const MAX_ATTEMPTS: u32 = 4;
/// A journaled launch EC2 still doesn't list after `launch_timeout_secs` plus this is taken
/// for failed and forgotten (if it shows up later, its fleet tag brings it back).
const JOURNAL_GRACE: Duration = Duration::from_secs(120);

/// Tracker instances on EC2.
#[derive(Clone, Debug)]
pub struct Ec2Provider {
    client: Client,
    fleet: String,
    ami: String,
    instance_type: String,
    subnet_id: String,
    security_group_ids: Vec<String>,
    instance_profile: String,
    user_data: String,
    port: u16,
    admin_port: u16,
    journal: Arc<Journal>,
    journal_ttl: Duration,
}

fn api(what: &str) -> impl FnOnce(String) -> ProviderError + '_ {
    move |why| ProviderError::Api {
        what: what.to_string(),
        why,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// The user data: the template with `@FLEET@`, `@PORT@`, `@ADMIN_PORT@` replaced.
pub fn render_user_data(template: &str, fleet: &str, port: u16, admin_port: u16) -> String {
    template
        .replace("@FLEET@", fleet)
        .replace("@PORT@", &port.to_string())
        .replace("@ADMIN_PORT@", &admin_port.to_string())
}

impl Ec2Provider {
    /// The SDK config loader for `e`: the standard credential chain, rustls + ring HTTPS,
    /// standard retries, an operation timeout, and the region and endpoint overrides.
    pub fn sdk_loader(e: &Ec2Config) -> aws_config::ConfigLoader {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        if !e.region.is_empty() {
            loader = loader.region(aws_config::Region::new(e.region.clone()));
        }
        if !e.endpoint_url.is_empty() {
            loader = loader.endpoint_url(e.endpoint_url.clone());
        }
        loader
    }

    /// A provider for `config.ec2` with the standard credential chain.
    ///
    /// # Errors
    /// The user data template can't be read.
    pub async fn new(config: &Config) -> Result<Self, ProviderError> {
        let sdk = Self::sdk_loader(&config.ec2).load().await;
        Self::with_sdk_config(config, &sdk).await
    }

    /// A provider for `config.ec2` over an SDK config built by the caller (tests: static
    /// credentials for moto). Reads the user data template and the launch journal now, so a
    /// missing file fails at start, not at the first launch.
    ///
    /// # Errors
    /// The template or the journal can't be read.
    pub async fn with_sdk_config(
        config: &Config,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, ProviderError> {
        let e = &config.ec2;
        let template = tokio::fs::read_to_string(&e.user_data_template)
            .await
            .map_err(|source| ProviderError::Io {
                what: format!("read {}", e.user_data_template.display()),
                source,
            })?;
        let journal = Arc::new(Journal::open(&e.launch_journal)?);
        Ok(Self {
            journal,
            journal_ttl: Duration::from_secs(config.scaling.launch_timeout_secs) + JOURNAL_GRACE,
            client: Client::new(sdk),
            fleet: config.fleet.clone(),
            ami: e.ami.clone(),
            instance_type: e.instance_type.clone(),
            subnet_id: e.subnet_id.clone(),
            security_group_ids: e.security_group_ids.clone(),
            instance_profile: e.instance_profile.clone(),
            user_data: render_user_data(
                &template,
                &config.fleet,
                config.tracker.port,
                config.tracker.admin_port,
            ),
            port: config.tracker.port,
            admin_port: config.tracker.admin_port,
        })
    }

    /// The EC2 client (tests use it to inspect what the provider did).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The launches remembered until EC2 lists them (tests look at it).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn instance(&self, i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
        let id = i.instance_id()?.to_string();
        let value = |key: &str| tag_value(i, key);
        let launched_at = i
            .launch_time()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or(UNIX_EPOCH);
        let phase_since = value(TAG_PHASE_SINCE)
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(launched_at, |s| UNIX_EPOCH + Duration::from_secs(s));
        let state = i.state().and_then(|s| s.name());
        let alive = matches!(
            state,
            Some(InstanceStateName::Pending | InstanceStateName::Running)
        );
        // Until it has a private address there is nothing to reach: unspecified, and not
        // ready, so it stays `launching`.
        let ip: IpAddr = i
            .private_ip_address()
            .and_then(|a| a.parse().ok())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Some(Instance {
            id,
            addr: SocketAddr::new(ip, self.port),
            admin: SocketAddr::new(ip, self.admin_port),
            phase: value(TAG_PHASE)
                .and_then(Phase::parse)
                .unwrap_or(Phase::Launching),
            launched_at,
            phase_since,
            alive,
        })
    }
}

fn tag_value<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

impl Ec2Provider {
    /// The fleet's instances that are not terminated, each with the launch token it was
    /// tagged with; only the one launched with `token` if given.
    async fn describe(
        &self,
        token: Option<&str>,
    ) -> Result<Vec<(Instance, Option<String>)>, ProviderError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut req = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{TAG_FLEET}"))
                        .values(&self.fleet)
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .values("pending")
                        .values("running")
                        .values("stopping")
                        .values("stopped")
                        .build(),
                );
            if let Some(token) = token {
                req = req.filters(
                    Filter::builder()
                        .name(format!("tag:{TAG_TOKEN}"))
                        .values(token)
                        .build(),
                );
            }
            let page = req
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| api("DescribeInstances")(DisplayErrorContext(&e).to_string()))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(|i| {
                    let token = tag_value(i, TAG_TOKEN).map(str::to_string);
                    Some((self.instance(i)?, token))
                }));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(out)
    }

    /// An instance EC2 doesn't list yet, as the journal remembers it: launching, alive.
    fn pending(&self, e: &journal::Entry, id: &str) -> Instance {
        let ip = e.private_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Instance {
            id: id.to_string(),
            addr: SocketAddr::new(ip, self.port),
            admin: SocketAddr::new(ip, self.admin_port),
            phase: Phase::Launching,
            launched_at: e.at(),
            phase_since: e.at(),
            alive: true,
        }
    }
}

impl Provider for Ec2Provider {
    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        // A launch whose answer was lost (the autoscaler stopped mid-call): asked again with
        // its token, EC2 returns the instance the first call made, or makes the one wanted.
        // (Older than a call can take, so it is no call of this process in flight.)
        for e in self.journal.entries().await {
            let age = SystemTime::now().duration_since(e.at()).unwrap_or_default();
            if e.id.is_none() && age > OPERATION_TIMEOUT && age < self.journal_ttl {
                self.launch(&e.token).await?;
            }
        }
        let listed = self.describe(None).await?;
        let ids: HashSet<&str> = listed.iter().map(|(i, _)| i.id.as_str()).collect();
        let tokens: HashSet<&str> = listed.iter().filter_map(|(_, t)| t.as_deref()).collect();
        let seen = |e: &journal::Entry| {
            tokens.contains(e.token.as_str()) || e.id.as_deref().is_some_and(|id| ids.contains(id))
        };
        self.journal.forget(seen, self.journal_ttl).await?;
        let mut out: Vec<Instance> = listed.iter().map(|(i, _)| i.clone()).collect();
        for e in self.journal.entries().await {
            if let Some(id) = &e.id {
                tracing::debug!(instance = %id, "launched, not yet listed by EC2: counted");
                out.push(self.pending(&e, id));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn launch(&self, client_token: &str) -> Result<Instance, ProviderError> {
        // Remembered before the call: a restart between here and the answer asks again with
        // the same token instead of launching another.
        self.journal.intend(client_token).await?;
        // EC2 itself returns the first call's instance for a repeated ClientToken; looking for
        // the token's tag first also covers an endpoint that ignores it.
        if let Some((found, _)) = self.describe(Some(client_token)).await?.into_iter().next() {
            self.journal
                .launched(
                    client_token,
                    &found.id,
                    Some(found.addr.ip()).filter(|ip| !ip.is_unspecified()),
                )
                .await?;
            return Ok(found);
        }
        let now = unix_secs(SystemTime::now()).to_string();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(tag(TAG_FLEET, &self.fleet))
            .tags(tag(TAG_PHASE, Phase::Launching.as_str()))
            .tags(tag(TAG_PHASE_SINCE, &now))
            .tags(tag(TAG_TOKEN, client_token))
            .tags(tag("Name", &format!("swarmtrack-{}", self.fleet)))
            .build();
        let mut req = self
            .client
            .run_instances()
            .client_token(client_token)
            .image_id(&self.ami)
            .instance_type(InstanceType::from(self.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .subnet_id(&self.subnet_id)
            .set_security_group_ids(
                (!self.security_group_ids.is_empty()).then(|| self.security_group_ids.clone()),
            )
            .user_data(base64::engine::general_purpose::STANDARD.encode(&self.user_data))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(tags);
        if !self.instance_profile.is_empty() {
            req = req.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(&self.instance_profile)
                    .build(),
            );
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                // EC2 answered no: nothing was launched, nothing to ask again. A timeout or a
                // lost connection may have launched it: the journal keeps it.
                if matches!(e, aws_sdk_ec2::error::SdkError::ServiceError(_)) {
                    self.journal
                        .forget(|x| x.token == client_token, self.journal_ttl)
                        .await?;
                }
                return Err(api("RunInstances")(DisplayErrorContext(&e).to_string()));
            }
        };
        let launched = out
            .instances()
            .first()
            .and_then(|i| self.instance(i))
            .ok_or_else(|| api("RunInstances")("no instance in the answer".to_string()))?;
        let ip = Some(launched.addr.ip()).filter(|ip| !ip.is_unspecified());
        self.journal
            .launched(client_token, &launched.id, ip)
            .await?;
        Ok(launched)
    }

    async fn set_phase(&self, id: &str, phase: Phase) -> Result<(), ProviderError> {
        let now = unix_secs(SystemTime::now()).to_string();
        self.client
            .create_tags()
            .resources(id)
            .tags(tag(TAG_PHASE, phase.as_str()))
            .tags(tag(TAG_PHASE_SINCE, &now))
            .send()
            .await
            .map_err(|e| api("CreateTags")(DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    async fn terminate(&self, id: &str) -> Result<(), ProviderError> {
        match self
            .client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let why = DisplayErrorContext(&e).to_string();
                // Already gone: what terminating wanted.
                if !why.contains("InvalidInstanceID.NotFound") {
                    return Err(api("TerminateInstances")(why));
                }
            }
        }
        self.journal
            .forget(|e| e.id.as_deref() == Some(id), self.journal_ttl)
            .await
    }
}
