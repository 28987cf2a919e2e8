//! The API's description (OpenAPI 3.1), generated from the handlers'
//! annotations and the wire types' schemas: what the document says at the
//! top, and the error answer every operation may give.
//!
//! Invariant: the committed `docs/openapi.json` is exactly what this code
//! generates (a test compares them).

use std::collections::HashMap;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Doc, Ref, RefOr, Response};

/// Each operation, by its id, and the engine operation it runs: its
/// permission is the engine's ([`quern_engine::permission_of`]), so the
/// document says what the engine enforces. `None`: answered to anyone.
pub(super) const OPERATIONS: &[(&str, Option<&str>)] = &[
    ("ops_healthz", None),
    ("ops_readyz", None),
    ("ops_openapi_json", None),
    ("ops_health", Some("queues")),
    ("ops_metrics", Some("metrics")),
    ("ops_queues", Some("queues")),
    ("ops_pause", Some("set_paused")),
    ("ops_resume", Some("set_paused")),
    ("tasks_submit", Some("submit")),
    ("tasks_list", Some("list")),
    ("tasks_submit_batch", Some("submit_batch")),
    ("tasks_get", Some("get")),
    ("tasks_cancel", Some("cancel")),
    ("tasks_retry", Some("retry")),
    ("tasks_history", Some("history")),
    ("workflows_approve", Some("approve")),
    ("workflows_submit", Some("submit_workflow")),
    ("workflows_get", Some("workflow_page")),
    ("workflows_graph", Some("workflow")),
    ("workflows_cancel", Some("cancel_workflow")),
    ("schedules_list", Some("schedules")),
    ("schedules_apply", Some("apply_schedules")),
    ("schedules_put", Some("put_schedule")),
    ("schedules_get", Some("schedule")),
    ("schedules_delete", Some("delete_schedule")),
    ("schedules_enable", Some("set_schedule_enabled")),
    ("schedules_disable", Some("set_schedule_enabled")),
    ("schedules_trigger", Some("trigger_schedule")),
    ("schedules_runs", Some("schedule_runs")),
    ("events_publish", Some("publish")),
    ("events_read", Some("read_events")),
    ("events_stream", Some("read_events")),
    ("events_ack", Some("ack_events")),
    ("webhooks_list", Some("webhooks")),
    ("webhooks_put", Some("put_webhook")),
    ("webhooks_get", Some("webhook")),
    ("webhooks_delete", Some("delete_webhook")),
    ("webhooks_resume", Some("resume_webhook")),
    ("webhooks_deliveries", Some("deliveries")),
    ("workers_lease", Some("lease")),
    ("workers_heartbeat", Some("heartbeat")),
    ("workers_stops", Some("stops")),
    ("workers_complete", Some("complete")),
    ("workers_register", Some("register")),
    ("workers_list", Some("workers")),
    ("workers_task_types", Some("task_types")),
    ("tokens_create", Some("create_token")),
    ("tokens_list", Some("tokens")),
    ("tokens_revoke", Some("revoke_token")),
    ("audit_list", Some("audit")),
];

/// The operations of a path, with their methods (the four the API uses).
pub(super) fn operations(item: &utoipa::openapi::PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
    [("GET", &item.get), ("PUT", &item.put), ("POST", &item.post), ("DELETE", &item.delete)]
        .into_iter()
        .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}

/// The routes (`METHOD /path`, as routed) whose description declares no
/// query parameter.
pub(super) fn routes_without_query(doc: &Doc) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            let takes_query = op.parameters.iter().flatten().any(|p| match p {
                utoipa::openapi::RefOr::T(p) => matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query),
                utoipa::openapi::RefOr::Ref(_) => true,
            });
            if !takes_query {
                out.insert(format!("{method} {path}"));
            }
        }
    }
    out
}

/// The engine operation each route runs, by path (as routed,
/// `/v1/tasks/{id}`) and then method: what the door admits a caller to
/// before it reads the request's body.
pub(super) fn engine_operations(doc: &Doc) -> HashMap<String, Vec<(&'static str, &'static str)>> {
    let mut out: HashMap<String, Vec<(&'static str, &'static str)>> = HashMap::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            let Some(id) = op.operation_id.as_deref() else { continue };
            if let Some((_, Some(engine_op))) = OPERATIONS.iter().find(|(o, _)| *o == id) {
                out.entry(path.clone()).or_default().push((method, *engine_op));
            }
        }
    }
    out
}

/// The security requirement of an operation: the bearer token with the
/// permission it needs as its scope, or nothing for a public one.
fn security(id: &str) -> Vec<SecurityRequirement> {
    match OPERATIONS.iter().find(|(o, _)| *o == id) {
        Some((_, None)) => Vec::new(),
        Some((_, Some(op))) => vec![SecurityRequirement::new("bearer", [quern_engine::permission_of(op).as_str()])],
        // Unknown here: described as the strictest, and a test fails.
        None => vec![SecurityRequirement::new("bearer", ["admin"])],
    }
}

/// The top of the document; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quern",
        description = "A durable task queue and workflow engine. Every non-2xx answer has the body \
            `{\"error\": {\"code\", \"message\", \"details\"}}`; docs/errors.md lists every code.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(quern_wire::ops::ErrorBody)),
    tags(
        (name = "tasks", description = "Submit, read, list, cancel and retry tasks"),
        (name = "workflows", description = "Graphs of tasks, and approvals"),
        (name = "schedules", description = "Cron, interval and one-off schedules"),
        (name = "events", description = "The event log and consumer groups"),
        (name = "webhooks", description = "Events pushed to a URL"),
        (name = "workers", description = "The worker protocol and the registry"),
        (name = "tokens", description = "API tokens (admins)"),
        (name = "audit", description = "Who changed what (admins)"),
        (name = "ops", description = "Health, readiness, queues, this description"),
    ),
)]
pub(super) struct ApiDoc;

/// Gives every operation a `default` answer (the error body), an id unique
/// in the document (its tag and its handler, `tasks_list`), and the token
/// permission it needs (as the scope of the `bearer` scheme).
pub(super) fn finish(doc: &mut Doc) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.bearer_format = Some("qrn_…".into());
    bearer.description = Some(
        "An API token; its role and queues decide what it may do (docs/security.md). Required when the server \
         runs with `--auth required`; without it, requests without a token may do everything."
            .into(),
    );
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    let error = || {
        let mut answer =
            Response::new("An error: `{\"error\": {\"code\", \"message\", \"details\"}}` (docs/errors.md)");
        answer.content.insert(
            "application/json".into(),
            RefOr::T(utoipa::openapi::content::Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))),
        );
        answer
    };
    for item in doc.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 4] = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
        for op in operations.into_iter().flatten() {
            if let (Some(tag), Some(id)) = (op.tags.as_ref().and_then(|t| t.first()), op.operation_id.as_ref()) {
                let id = format!("{tag}_{id}");
                op.security = Some(security(&id));
                op.operation_id = Some(id);
            }
            op.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(error()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{openapi, openapi_text};
    use std::collections::BTreeSet;

    #[test]
    fn docs_openapi_json_is_what_the_code_generates() {
        let generated = openapi_text();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        if std::env::var_os("QUERN_BLESS").is_some() {
            std::fs::write(path, format!("{generated}\n")).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim_end() == generated,
            "docs/openapi.json is not what the code generates: \
             `QUERN_BLESS=1 cargo test -p quern-server openapi` writes it anew"
        );
    }

    #[test]
    fn docs_security_md_shows_the_permissions_the_server_enforces() {
        let mut described = BTreeSet::new();
        for (path, item) in &openapi().paths.paths {
            for (method, op) in super::operations(item) {
                let id = op.operation_id.as_deref().unwrap_or_default();
                let permission = match super::OPERATIONS.iter().find(|(o, _)| *o == id) {
                    Some((_, Some(engine_op))) => quern_engine::permission_of(engine_op).as_str(),
                    _ => "none",
                };
                described.insert(format!("{method} {path} {permission}"));
            }
        }
        let doc = include_str!("../../../../docs/security.md");
        let listed: BTreeSet<String> = doc
            .lines()
            .filter_map(|line| {
                let mut cells = line.split('|').map(str::trim).skip(1);
                let route = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                let permission = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some(format!("{route} {permission}"))
            })
            .collect();
        assert_eq!(listed, described, "docs/security.md's matrix against the server's permissions");
    }

    #[test]
    fn every_operation_answers_errors_with_the_error_body() {
        let doc = openapi();
        let mut operations = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [("get", &item.get), ("put", &item.put), ("post", &item.post), ("delete", &item.delete)]
            {
                let Some(op) = op else { continue };
                assert!(op.responses.responses.contains_key("default"), "{method} {path} has no error answer");
                operations.insert(format!("{method} {path}"));
            }
        }
        assert_eq!(operations.len(), 50, "{operations:#?}");
        let named: BTreeSet<String> = super::OPERATIONS.iter().map(|(id, _)| (*id).to_owned()).collect();
        let ids: BTreeSet<String> = doc
            .paths
            .paths
            .values()
            .flat_map(|item| [&item.get, &item.put, &item.post, &item.delete])
            .flatten()
            .filter_map(|op| op.operation_id.clone())
            .collect();
        assert_eq!(ids, named, "every operation has its engine operation named in OPERATIONS");
    }
}
