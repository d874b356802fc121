//! The OpenAPI 3.1 document of the REST API, generated from the handlers' `#[utoipa::path]`
//! attributes and the `ToSchema` types of `wire`. Served at [`crate::web::OPENAPI_PATH`].

use axum::http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::rest;
use crate::wire::{
    ConversationFields, ConversationJson, ConversationListJson, ConversationRef, CreateGroupJson, ErrorJson,
    ErrorMessage, GroupMemberJson, InboxEntryJson, MemberJson, MessageJson, MessagePageJson, OpenConversationJson,
};

/// Name of the bearer-token security scheme.
pub const BEARER_SCHEME: &str = "bearer_jwt";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat REST API",
        description = "Conversations, their history and a user's inbox. Real-time messaging is the Socket.IO namespace `/chat` \
                       (see the README). Errors are JSON `{statusCode, error, message}`, where `message` is a text \
                       or, for a request that fails validation, the list of every problem.",
    ),
    paths(rest::open_conversation, rest::create_group, rest::list_messages, rest::list_conversations),
    components(schemas(
        ConversationFields,
        ConversationJson,
        ConversationListJson,
        ConversationRef,
        CreateGroupJson,
        ErrorJson,
        ErrorMessage,
        GroupMemberJson,
        InboxEntryJson,
        MemberJson,
        MessageJson,
        MessagePageJson,
        OpenConversationJson,
    )),
    modifiers(&BearerAuth, &CommonErrors),
    tags(
        (name = "conversations", description = "Open conversations, create groups, read their messages"),
    ),
)]
struct ApiDoc;

/// Adds the bearer-token scheme the routes name in their `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "Only when the server runs with `--auth jwt`: `Authorization: Bearer <token>`, the user id in the \
                 token's user claim (`sub` by default). In development mode the REST API is open.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The errors any `/api/` route may answer, whatever it does: added to each here, once.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let common = [
            (StatusCode::UNAUTHORIZED, "JWT mode: no valid bearer token", "Invalid token: expired"),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The persister did not answer in time",
                "Service temporarily unavailable",
            ),
        ];
        let api = openapi.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/api/")).map(|(_, item)| item);
        for item in api {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, description, message) in common {
                    let example = serde_json::json!({
                        "statusCode": status.as_u16(),
                        "error": status.canonical_reason(),
                        "message": message,
                    });
                    let content =
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorJson"))).example(Some(example));
                    let response =
                        ResponseBuilder::new().description(description).content("application/json", content.build());
                    operation.responses.responses.entry(status.as_str().to_owned()).or_insert(response.into());
                }
            }
        }
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    /// `(method, path)` of every `.route("<path>", <method>(handler)…)` in some router source.
    fn routes_in(source: &str) -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for call in source.split(".route(\"").skip(1) {
            let (path, rest) = call.split_once('"').expect("a route's path is a string literal");
            let handlers = rest.split_once('\n').map_or(rest, |(line, _)| line);
            for method in METHODS {
                let called = handlers.match_indices(&format!("{method}(")).any(|(at, _)| {
                    let before = at.checked_sub(1).map(|i| handlers.as_bytes()[i]);
                    !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                });
                if called {
                    routes.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        routes
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let json = serde_json::to_value(document()).expect("the document serializes");
        let paths = json["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS.iter().filter(|m| item.get(**m).is_some()).map(|m| ((*m).to_owned(), path.clone()))
            })
            .collect()
    }

    /// The routes `rest::router` registers, read from its source: a route added there without
    /// documentation (or documentation of a route that is gone) fails this test.
    #[test]
    fn every_rest_route_is_documented_and_nothing_else() {
        let routes = routes_in(include_str!("rest.rs"));
        assert!(routes.len() >= 3, "the scan of rest.rs found too few routes: {routes:?}");
        assert_eq!(documented_routes(), routes);
    }

    #[test]
    fn the_route_scan_sees_chained_methods_and_ignores_lookalikes() {
        let found = routes_in(".route(\"/a\", get(x).post(y))\n.route(\"/b\", target(z))\n.route(\"/c\", my_get(z))\n");
        let expected = [("get", "/a"), ("post", "/a")].map(|(m, p)| (m.to_owned(), p.to_owned()));
        assert_eq!(found, BTreeSet::from(expected));
    }

    #[test]
    fn every_operation_has_examples_and_a_json_error_shape() {
        let json = serde_json::to_value(document()).expect("the document serializes");
        for (path, item) in json["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                if path.starts_with("/api/") {
                    for status in ["401", "503"] {
                        assert!(op["responses"].get(status).is_some(), "{method} {path}: no {status}");
                    }
                }
                for (status, response) in op["responses"].as_object().expect("responses") {
                    let media = &response["content"]["application/json"];
                    assert!(
                        media.get("example").is_some() || media.get("examples").is_some(),
                        "{method} {path} {status}: no example"
                    );
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            media["schema"]["$ref"], "#/components/schemas/ErrorJson",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let scheme = &json["components"]["securitySchemes"][BEARER_SCHEME];
        assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    }
}
