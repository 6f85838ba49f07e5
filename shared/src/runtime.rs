//! Wiring: build the adapters once from the typed configuration (`crate::config`), for Lambda
//! (DynamoDB, SQS, reqwest) or for the local runner (embedded redb store and queue). A builder
//! takes the typed part it needs ([`EnerfloAccess`], [`LambdaAws`], [`CrmAccess`], ...), so it
//! cannot be called without a required value and never checks one again.

use std::sync::Arc;

use crate::classify::Stage;
use crate::config::{
    Config, ConfigError, CrmAccess, EnerfloAccess, HubSpotApiSettings, HubSpotCrm, LambdaAws,
    MondayApiSettings, MondayCrm, MondayInbound, SalesforceCrm, WebhookCrm,
};
use crate::consumer::{Consumer, StageHandler};
use crate::crm::{CrmConnector, WebhookCrmConnector};
use crate::enerflo::{EnerfloApi, HttpEnerfloClient};
use crate::pipeline::{Kit, Pipeline};
use crate::queue::EventQueue;
use crate::queue::sqs::{SqsEventQueue, SqsStageQueues};
use crate::store::dynamo::DynamoStore;
use crate::store::{ClaimStore, EchoStore, EventLog, SyncStateStore, XrefStore};
use crate::sync::EchoGuard;

/// Enerflo allows 300 requests per minute per key; stay under it with room for other callers.
pub const ENERFLO_REQUESTS_PER_MINUTE: usize = 240;

/// Every port, behind its trait.
#[derive(Clone)]
pub struct Ports {
    pub xref: Arc<dyn XrefStore>,
    pub claims: Arc<dyn ClaimStore>,
    pub state: Arc<dyn SyncStateStore>,
    pub log: Arc<dyn EventLog>,
    pub echo: Arc<dyn EchoStore>,
    pub queue: Arc<dyn EventQueue>,
}

impl Ports {
    /// Every store port on one store (the embedded store, or DynamoDB's one table) beside
    /// `queue`.
    pub fn one_store<S>(store: Arc<S>, queue: Arc<dyn EventQueue>) -> Self
    where
        S: XrefStore + ClaimStore + SyncStateStore + EventLog + EchoStore + 'static,
    {
        Self {
            xref: store.clone(),
            claims: store.clone(),
            state: store.clone(),
            log: store.clone(),
            echo: store,
            queue,
        }
    }

    /// The sync kit the stage pipelines and inbound routes share.
    pub fn kit(&self, crm: Arc<dyn CrmConnector>, config: &Config) -> Kit {
        Kit::new(
            crm,
            self.xref.clone(),
            self.claims.clone(),
            self.state.clone(),
            self.echo.clone(),
            config.echo_ttl,
            config.crm_include_raw,
        )
    }

    /// Where the inbound routes record each CRM call (the event log).
    pub fn call_log(&self, config: &Config) -> Arc<crate::http::calls::CallLog> {
        Arc::new(crate::http::calls::CallLog {
            log: self.log.clone(),
            xref: self.xref.clone(),
            ttl_secs: config.event_log_ttl.as_secs(),
        })
    }

    pub fn echo_guard(&self, config: &Config) -> EchoGuard {
        EchoGuard::new(self.echo.clone(), self.state.clone(), config.echo_ttl)
    }
}

fn startup(what: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        problems: vec![format!("{what}: {e}")],
    }
}

/// The timeouts of every AWS SDK call: an unreachable table or queue must fail the request in
/// seconds (and be retried), not hang until the Lambda times out.
fn aws_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(3))
        .operation_timeout(std::time::Duration::from_secs(8))
        .build()
}

/// The AWS SDK configuration from the environment, profiles and the whole default provider
/// chain (for operators' tools), with the timeouts of [`lambda_sdk_config`] and the shared HTTP
/// client.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_timeouts();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(crate::wire::aws_http_client(&timeouts))
        .timeout_config(timeouts)
        .load()
        .await
}

/// The AWS SDK configuration of a Lambda function, built without I/O and without the default
/// provider chain: Lambda hands every function its region (`AWS_REGION`) and its role's
/// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) in the
/// environment, so nothing else (profile files, web identity, ECS, IMDS, STS) is built or linked.
/// `endpoint_url` (`AWS_ENDPOINT_URL`) points DynamoDB and SQS at moto or LocalStack.
pub fn lambda_sdk_config(
    region: String,
    endpoint_url: Option<String>,
    credentials: impl aws_credential_types::provider::ProvideCredentials + 'static,
) -> aws_config::SdkConfig {
    let timeouts = aws_timeouts();
    let mut sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        )
        .http_client(crate::wire::aws_http_client(&timeouts))
        .retry_config(aws_config::retry::RetryConfig::standard())
        .timeout_config(timeouts);
    sdk.set_endpoint_url(endpoint_url);
    sdk.build()
}

/// DynamoDB + SQS ports (Lambda), on [`lambda_sdk_config`] with the credentials Lambda puts in
/// the environment. `AWS_ENDPOINT_URL` points both at moto or LocalStack.
pub fn aws_ports(aws: &LambdaAws) -> Ports {
    let sdk = lambda_sdk_config(
        aws.region.clone(),
        aws.table.endpoint_url.clone(),
        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
    );
    let store = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        aws.table.table_name.clone(),
    ));
    let queues = aws
        .table
        .queues
        .iter()
        .map(|(stage, urls)| {
            (
                *stage,
                SqsStageQueues {
                    url: urls.url.clone(),
                    dlq_url: urls.dlq_url.clone(),
                },
            )
        })
        .collect();
    let queue = Arc::new(SqsEventQueue::new(aws_sdk_sqs::Client::new(&sdk), queues));
    Ports::one_store(store, queue)
}

/// The Enerflo client, at [`ENERFLO_REQUESTS_PER_MINUTE`].
pub fn enerflo_client(enerflo: &EnerfloAccess) -> Result<Arc<dyn EnerfloApi>, ConfigError> {
    let client = HttpEnerfloClient::new(
        &enerflo.base_url,
        enerflo.api_key.clone(),
        enerflo.timeout,
        ENERFLO_REQUESTS_PER_MINUTE,
    )
    .map_err(|e| startup("Enerflo HTTP client", e))?;
    Ok(Arc::new(client))
}

/// The configured CRM connector, given the ports a connector may keep its own records in (the
/// Monday.com connector's item cross-references and daily call count).
pub fn crm_connector(crm: &CrmAccess, ports: &Ports) -> Result<Arc<dyn CrmConnector>, ConfigError> {
    Ok(match crm {
        CrmAccess::Webhook(webhook) => Arc::new(webhook_connector(webhook)?),
        CrmAccess::HubSpot(hubspot) => Arc::new(hubspot_connector(hubspot)?),
        CrmAccess::Salesforce(salesforce) => Arc::new(salesforce_connector(salesforce)?),
        CrmAccess::Monday(monday) => {
            let api = monday_api(&monday.api, ports)?;
            Arc::new(monday_connector(monday, ports, api))
        }
    })
}

/// The webhook connector (`CRM_CONNECTOR=webhook`): signed canonical events to `CRM_WEBHOOK_URL`.
pub fn webhook_connector(webhook: &WebhookCrm) -> Result<WebhookCrmConnector, ConfigError> {
    WebhookCrmConnector::new(&webhook.url, webhook.secret.clone(), webhook.timeout)
        .map_err(|e| startup("CRM HTTP client", e))
}

/// The Monday.com API client: one per process, shared by every caller so the minute budget, the
/// complexity reading and a limit's pause hold for all of them; the daily call count lives in
/// the state table, shared by every process.
pub fn monday_api(
    api: &MondayApiSettings,
    ports: &Ports,
) -> Result<Arc<crate::crm::monday::api::MondayApi>, ConfigError> {
    let client = crate::crm::monday::api::MondayApi::new(
        &api.api_url,
        api.api_token.clone(),
        &api.api_version,
        api.timeout,
        api.minute_budget,
        Some(crate::crm::monday::api::DailyBudget {
            counter: ports.log.clone(),
            limit: api.daily_call_budget,
        }),
    )
    .map_err(|e| startup("Monday.com HTTP client", e))?;
    Ok(Arc::new(client))
}

pub fn monday_connector(
    monday: &MondayCrm,
    ports: &Ports,
    api: Arc<crate::crm::monday::api::MondayApi>,
) -> crate::crm::MondayConnector {
    crate::crm::MondayConnector::new(
        api,
        monday.profile.clone(),
        monday.boards.clone(),
        monday.milestone_keys.clone(),
        crate::crm::monday::MondayStores {
            xref: ports.xref.clone(),
            state: ports.state.clone(),
            claims: ports.claims.clone(),
        },
    )
}

/// The HubSpot API client: one per process, shared by every caller so the 10-second budget and
/// a 429's pause hold for all of them.
pub fn hubspot_api(
    api: &HubSpotApiSettings,
) -> Result<Arc<crate::crm::hubspot::api::HubSpotApi>, ConfigError> {
    let client = crate::crm::hubspot::api::HubSpotApi::new(
        &api.base_url,
        api.access_token.clone(),
        api.timeout,
        api.ten_second_budget,
    )
    .map_err(|e| startup("HubSpot HTTP client", e))?;
    Ok(Arc::new(client))
}

pub fn hubspot_connector(
    hubspot: &HubSpotCrm,
) -> Result<crate::crm::HubSpotConnector, ConfigError> {
    Ok(hubspot_connector_with(hubspot, hubspot_api(&hubspot.api)?))
}

/// The HubSpot connector on a given API client (a process sharing one client, and so one
/// 10-second budget, between the connector and the notes poll).
pub fn hubspot_connector_with(
    hubspot: &HubSpotCrm,
    api: Arc<crate::crm::hubspot::api::HubSpotApi>,
) -> crate::crm::HubSpotConnector {
    crate::crm::HubSpotConnector::new(
        api,
        hubspot.profile.clone(),
        &hubspot.pipeline,
        hubspot.milestone_keys.clone(),
    )
}

/// The Salesforce API client (one per process: one cached token, one view of the API budget).
pub fn salesforce_api(
    salesforce: &SalesforceCrm,
) -> Result<Arc<crate::crm::salesforce::api::SalesforceApi>, ConfigError> {
    use crate::crm::salesforce::auth::Authenticator;
    let http = crate::wire::http_client(salesforce.timeout)
        .map_err(|e| startup("Salesforce HTTP client", e))?;
    let auth = Authenticator::new(
        http.clone(),
        &salesforce.login_url,
        salesforce.grant.clone(),
    );
    Ok(Arc::new(crate::crm::salesforce::api::SalesforceApi::new(
        http,
        auth,
        &salesforce.api_version,
        salesforce.budget_percent,
    )))
}

pub fn salesforce_connector(
    salesforce: &SalesforceCrm,
) -> Result<crate::crm::SalesforceConnector, ConfigError> {
    Ok(crate::crm::SalesforceConnector::new(
        salesforce_api(salesforce)?,
        salesforce.profile.clone(),
        salesforce.milestone_keys.clone(),
    ))
}

/// The mapping profile the HubSpot workflow routes read (`stages.by_status`, `milestone_dates`):
/// the loaded one with `CRM_CONNECTOR=hubspot`, else HubSpot's built-in default.
pub fn hubspot_profile(config: &Config) -> Arc<crate::crm::profile::Profile> {
    let loaded = match config.crm_connector {
        crate::config::CrmConnectorKind::HubSpot => config.crm_profile.clone(),
        _ => None,
    };
    loaded.unwrap_or_else(|| {
        #[allow(clippy::expect_used)]
        Arc::new(
            crate::crm::profile::Profile::parse(
                "built-in hubspot",
                crate::crm::profile::HUBSPOT_DEFAULT,
            )
            .expect("the built-in HubSpot profile is valid (a unit test checks it)"),
        )
    })
}

/// How the HubSpot workflow routes authenticate their callers; their handlers are set with
/// [`crate::http::Router::set`].
pub fn hubspot_routes(config: &Config) -> crate::http::router::HubSpotRoutes {
    crate::http::router::HubSpotRoutes {
        client_secret: config.hubspot.client_secret.clone(),
        public_url: config.hubspot.public_url.clone(),
        ..Default::default()
    }
}

/// The HubSpot workflow route translating into `canonical` (the handler of the canonical route
/// it maps to); `None` when `route` is not a HubSpot route.
pub fn hubspot_workflow(
    route: crate::registry::Route,
    config: &Config,
    ports: &Ports,
    canonical: Arc<dyn crate::http::router::InboundRoute>,
) -> Option<Arc<dyn crate::http::router::InboundRoute>> {
    use crate::inbound::hubspot::{Action, WorkflowRoute};
    use crate::registry::Route;
    let action = match route {
        Route::HubSpotLead => Action::Lead,
        Route::HubSpotStatus => Action::Status,
        Route::HubSpotMilestone => Action::Milestone,
        _ => return None,
    };
    Some(Arc::new(WorkflowRoute {
        action,
        target: canonical,
        profile: hubspot_profile(config),
        xref: ports.xref.clone(),
        echo: ports.echo_guard(config),
    }))
}

/// The HubSpot notes poll (`hubspot-notes-poll`, and a periodic task of the local runner).
pub fn hubspot_notes_poll(
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    api: Arc<crate::crm::hubspot::api::HubSpotApi>,
) -> crate::inbound::hubspot_notes::NotesPoll {
    use crate::canonical::CrmEventType;
    use crate::inbound::hubspot_notes::{DEFAULT_MAX_PAGES, DEFAULT_OVERLAP, NotesPoll};
    let profile = hubspot_profile(config);
    NotesPoll {
        api,
        notes: notes_route(config, ports, enerflo),
        xref: ports.xref.clone(),
        state: ports.state.clone(),
        claims: ports.claims.clone(),
        notes_object: profile.event(CrmEventType::NoteCreated).object.clone(),
        deals_object: profile.event(CrmEventType::StatusChanged).object.clone(),
        overlap: DEFAULT_OVERLAP,
        max_pages: DEFAULT_MAX_PAGES,
    }
}

/// The mapping profile the Salesforce inbound routes read (`stages`, `milestone_dates`, the
/// lead and deal objects): the loaded one with `CRM_CONNECTOR=salesforce`, else Salesforce's
/// built-in default.
pub fn salesforce_profile(config: &Config) -> Arc<crate::crm::profile::Profile> {
    let loaded = match config.crm_connector {
        crate::config::CrmConnectorKind::Salesforce => config.crm_profile.clone(),
        _ => None,
    };
    loaded.unwrap_or_else(|| {
        #[allow(clippy::expect_used)]
        Arc::new(
            crate::crm::profile::Profile::parse(
                "built-in salesforce",
                crate::crm::profile::SALESFORCE_DEFAULT,
            )
            .expect("the built-in Salesforce profile is valid (a unit test checks it)"),
        )
    })
}

/// The Salesforce Flow callout route translating into `canonical` (the handler of the canonical
/// route it maps to); `None` when `route` is not a Flow callout route.
pub fn salesforce_flow(
    route: crate::registry::Route,
    config: &Config,
    ports: &Ports,
    canonical: Arc<dyn crate::http::router::InboundRoute>,
) -> Option<Arc<dyn crate::http::router::InboundRoute>> {
    use crate::inbound::salesforce::Action;
    use crate::registry::Route;
    let action = match route {
        Route::SalesforceLead => Action::Lead,
        Route::SalesforceStatus => Action::Status,
        Route::SalesforceMilestone => Action::Milestone,
        Route::SalesforceNote => Action::Note,
        _ => return None,
    };
    Some(Arc::new(crate::inbound::salesforce::flow::FlowRoute {
        action,
        target: canonical,
        profile: salesforce_profile(config),
        xref: ports.xref.clone(),
        echo: ports.echo_guard(config),
    }))
}

/// `POST /crm/salesforce/outbound-message`, on the canonical routes' handlers.
pub fn salesforce_outbound_message(
    config: &Config,
    ports: &Ports,
    leads: Arc<dyn crate::http::router::InboundRoute>,
    status: Arc<dyn crate::http::router::InboundRoute>,
    milestone: Arc<dyn crate::http::router::InboundRoute>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    Arc::new(crate::inbound::salesforce::outbound::OutboundMessageRoute {
        org_id: config.salesforce.org_id.clone(),
        profile: salesforce_profile(config),
        xref: ports.xref.clone(),
        echo: ports.echo_guard(config),
        claims: ports.claims.clone(),
        leads,
        status,
        milestone,
        dedupe_ttl: config.idempotency_ttl,
        budget: config.inbound_wait_budget,
    })
}

/// Every route the function of `route` serves, with its handler: the canonical route's handler
/// once, behind the HubSpot workflow and Salesforce routes that translate to it too
/// (`Route::served_with`).
pub fn inbound_routes(
    route: crate::registry::Route,
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    monday: Option<&MondayInbound>,
) -> Vec<(
    crate::registry::Route,
    Arc<dyn crate::http::router::InboundRoute>,
)> {
    use crate::registry::Route;
    let canonical = inbound_route(route, config, ports, enerflo.clone(), monday);
    let mut out = vec![(route, canonical.clone())];
    for other in route.served_with().into_iter().skip(1) {
        let handler = match other {
            Route::SalesforceOutboundMessage => salesforce_outbound_message(
                config,
                ports,
                leads_route(config, ports, enerflo.clone()),
                canonical.clone(),
                milestone_route(config, ports, enerflo.clone()),
            ),
            _ => match hubspot_workflow(other, config, ports, canonical.clone())
                .or_else(|| salesforce_flow(other, config, ports, canonical.clone()))
            {
                Some(h) => h,
                None => continue,
            },
        };
        out.push((other, handler));
    }
    out
}

/// The webhook ingest handler, wired from configuration.
pub fn webhook_ingest(config: &Config, ports: &Ports) -> crate::http::webhook::WebhookIngest {
    crate::http::webhook::WebhookIngest {
        tokens: config.webhook_tokens.clone(),
        max_body_bytes: config.max_body_bytes,
        install_id_paths: config.install_id_paths.clone(),
        queue: ports.queue.clone(),
        log: ports.log.clone(),
        dedupe_ttl: config.idempotency_ttl,
        log_ttl: config.event_log_ttl,
    }
}

/// How long one Enerflo call may retry inside a consumer before the queue's backoff takes over.
pub const CONSUMER_CALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Stages that have a consumer in this build. Events of other stages are acknowledged and parked
/// in the event log (for replay once their consumer is deployed).
pub const CONSUMER_STAGES: &[Stage] = &[
    Stage::Leads,
    Stage::Project,
    Stage::Note,
    Stage::ChangeOrder,
    Stage::Milestone,
    Stage::Status,
];

/// How one stage's handler is wired from configuration, the sync kit and the Enerflo client.
pub type HandlerWiring = fn(&Config, Kit, Arc<dyn EnerfloApi>) -> Arc<dyn StageHandler>;

/// The wiring of `stage`'s handler. Inlined, so that a binary naming one stage as a constant
/// (`lambda::run_stage_consumer`) references, and links, that stage's code only.
#[inline(always)]
pub fn handler_wiring(stage: Stage) -> HandlerWiring {
    match stage {
        Stage::Leads => leads_handler,
        Stage::Project => project_handler,
        Stage::Note => note_handler,
        Stage::ChangeOrder => change_order_handler,
        Stage::Milestone => milestone_handler,
        Stage::Status => status_handler,
    }
}

fn leads_handler(config: &Config, kit: Kit, _: Arc<dyn EnerfloApi>) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::leads::LeadsStage {
            fields: config.fields.lead.clone(),
        },
        kit,
    ))
}

fn project_handler(_: &Config, kit: Kit, enerflo: Arc<dyn EnerfloApi>) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::project::ProjectStage {
            enerflo,
            call_budget: CONSUMER_CALL_BUDGET,
        },
        kit,
    ))
}

fn note_handler(config: &Config, kit: Kit, _: Arc<dyn EnerfloApi>) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::note::NoteStage {
            fields: config.fields.clone(),
            install_id_paths: config.install_id_paths.clone(),
        },
        kit,
    ))
}

fn change_order_handler(_: &Config, kit: Kit, _: Arc<dyn EnerfloApi>) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::change_order::ChangeOrderStage,
        kit,
    ))
}

fn milestone_handler(
    config: &Config,
    kit: Kit,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::milestone::MilestoneStage {
            enerflo,
            fields: config.fields.clone(),
            install_id_paths: config.install_id_paths.clone(),
            call_budget: CONSUMER_CALL_BUDGET,
        },
        kit,
    ))
}

fn status_handler(
    config: &Config,
    kit: Kit,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn StageHandler> {
    Arc::new(Pipeline::new(
        crate::stages::status::StatusStage {
            enerflo,
            catalog: Arc::new(crate::enerflo::api_status::StatusCatalog::default()),
            fields: config.fields.clone(),
            install_id_paths: config.install_id_paths.clone(),
            call_budget: CONSUMER_CALL_BUDGET,
        },
        kit,
    ))
}

/// The consumer of one stage, wired from configuration; `None` for a stage without one.
pub fn consumer_for(
    stage: Stage,
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    crm: Arc<dyn CrmConnector>,
) -> Option<Consumer> {
    Some(consumer_with(
        handler_wiring(stage),
        config,
        ports,
        enerflo,
        crm,
    ))
}

/// The consumer whose handler `wiring` builds.
pub fn consumer_with(
    wiring: HandlerWiring,
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    crm: Arc<dyn CrmConnector>,
) -> Consumer {
    Consumer {
        handler: wiring(config, ports.kit(crm, config), enerflo),
        queue: ports.queue.clone(),
        log: ports.log.clone(),
        retry: config.retry,
    }
}

/// One inbound route's handler, wired from configuration; `monday` is what
/// [`Route::Monday`](crate::registry::Route::Monday) serves with (`Config::monday_inbound`).
pub fn inbound_route(
    route: crate::registry::Route,
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    monday: Option<&MondayInbound>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    use crate::registry::Route;
    match route {
        Route::Leads => leads_route(config, ports, enerflo),
        Route::Milestone => milestone_route(config, ports, enerflo),
        Route::Status => status_route(config, ports, enerflo),
        Route::Note => notes_route(config, ports, enerflo),
        Route::HubSpotLead | Route::HubSpotStatus | Route::HubSpotMilestone => {
            let canonical = match route {
                Route::HubSpotLead => leads_route(config, ports, enerflo),
                Route::HubSpotStatus => status_route(config, ports, enerflo),
                _ => milestone_route(config, ports, enerflo),
            };
            hubspot_workflow(route, config, ports, canonical.clone()).unwrap_or(canonical)
        }
        Route::SalesforceLead
        | Route::SalesforceStatus
        | Route::SalesforceMilestone
        | Route::SalesforceNote => {
            let canonical = match route {
                Route::SalesforceLead => leads_route(config, ports, enerflo),
                Route::SalesforceStatus => status_route(config, ports, enerflo),
                Route::SalesforceMilestone => milestone_route(config, ports, enerflo),
                _ => notes_route(config, ports, enerflo),
            };
            salesforce_flow(route, config, ports, canonical.clone()).unwrap_or(canonical)
        }
        Route::SalesforceOutboundMessage => salesforce_outbound_message(
            config,
            ports,
            leads_route(config, ports, enerflo.clone()),
            status_route(config, ports, enerflo.clone()),
            milestone_route(config, ports, enerflo),
        ),
        Route::Monday => monday_route(monday, config, ports, enerflo, None),
    }
}

/// `POST /crm/monday/webhooks/{token}`, wired from configuration: Monday.com board webhooks
/// through the four canonical routes. `api` is the process's Monday client when it has one
/// already (the local runner shares the connector's); else one is built when `monday` has
/// `MONDAY_API_TOKEN`. Without `monday` (another connector) it answers 404.
pub fn monday_route(
    monday: Option<&MondayInbound>,
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
    api: Option<Arc<crate::crm::monday::api::MondayApi>>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    let Some(monday) = monday else {
        return Arc::new(NotServed);
    };
    let api = match (api, &monday.api) {
        (Some(api), _) => Some(api),
        (None, Some(settings)) => monday_api(settings, ports)
            .inspect_err(|e| {
                tracing::error!(error = %e, "the Monday.com webhook route reads no customer items")
            })
            .ok(),
        (None, None) => None,
    };
    Arc::new(crate::inbound::monday::MondayWebhookRoute {
        tokens: monday.tokens.clone(),
        signing_secret: monday.signing_secret.clone(),
        api,
        profile: monday.profile.clone(),
        boards: monday.boards.clone(),
        state: ports.state.clone(),
        claims: ports.claims.clone(),
        leads: leads_route(config, ports, enerflo.clone()),
        status: status_route(config, ports, enerflo.clone()),
        milestone: milestone_route(config, ports, enerflo.clone()),
        notes: notes_route(config, ports, enerflo),
    })
}

/// A route this configuration does not serve: 404, as an unknown path.
struct NotServed;

#[async_trait::async_trait]
impl crate::http::router::InboundRoute for NotServed {
    async fn handle(
        &self,
        _req: &crate::http::HttpRequest,
        _params: &crate::http::router::RouteParams,
    ) -> crate::http::HttpResponse {
        crate::http::Problem::not_found().into_response()
    }
}

/// `POST /crm/leads` (stage 1.1), wired from configuration.
pub fn leads_route(
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    let route = Arc::new(crate::inbound::leads::LeadsRoute {
        enerflo,
        xref: ports.xref.clone(),
        claims: ports.claims.clone(),
        state: ports.state.clone(),
        echo: ports.echo_guard(config),
        fields: config.fields.lead.clone(),
        budget: config.inbound_wait_budget,
        peer_wait: crate::inbound::leads::PEER_WAIT,
    });
    crate::metrics::scoped("crm_leads", route)
}

/// `POST /crm/installs/{install}/notes` (stage 5.1), wired from configuration.
pub fn notes_route(
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    let route = Arc::new(crate::inbound::notes::NotesRoute {
        enerflo,
        xref: ports.xref.clone(),
        claims: ports.claims.clone(),
        state: ports.state.clone(),
        echo: ports.echo_guard(config),
        fields: config.fields.clone(),
        budget: config.inbound_wait_budget,
        idempotency_ttl: config.idempotency_ttl,
    });
    crate::metrics::scoped("crm_note", route)
}

/// `PUT /crm/installs/{install}/milestones/{milestone}` (stage 3.1), wired from configuration.
pub fn milestone_route(
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    let route = Arc::new(crate::inbound::milestone::MilestoneRoute {
        enerflo,
        xref: ports.xref.clone(),
        claims: ports.claims.clone(),
        echo: ports.echo_guard(config),
        fields: config.fields.clone(),
        budget: config.inbound_wait_budget,
    });
    crate::metrics::scoped("crm_milestone", route)
}

/// `PUT /crm/installs/{install}/status` (stage 4.1), wired from configuration.
pub fn status_route(
    config: &Config,
    ports: &Ports,
    enerflo: Arc<dyn EnerfloApi>,
) -> Arc<dyn crate::http::router::InboundRoute> {
    let route = Arc::new(crate::inbound::status::StatusRoute {
        enerflo,
        xref: ports.xref.clone(),
        claims: ports.claims.clone(),
        echo: ports.echo_guard(config),
        catalog: Arc::new(crate::enerflo::api_status::StatusCatalog::default()),
        status_field: config.fields.status_field.clone(),
        budget: config.inbound_wait_budget,
    });
    crate::metrics::scoped("crm_status", route)
}
