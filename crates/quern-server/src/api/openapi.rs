//! The API's description (OpenAPI 3.1), generated from the handlers'
//! annotations and the wire types' schemas: what the document says at the
//! top, and the error answer every operation may give.
//!
//! Invariant: the committed `docs/openapi.json` is exactly what this code
//! generates (a test compares them).

use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi as Doc, Ref, RefOr, Response};

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
        (name = "ops", description = "Health, readiness, queues, this description"),
    ),
)]
pub(super) struct ApiDoc;

/// Gives every operation a `default` answer (the error body) and an id
/// unique in the document: its tag and its handler, `tasks_list`.
pub(super) fn finish(doc: &mut Doc) {
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
                op.operation_id = Some(format!("{tag}_{id}"));
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
        assert_eq!(operations.len(), 44, "{operations:#?}");
    }
}
