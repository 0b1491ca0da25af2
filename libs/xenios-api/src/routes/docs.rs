use axum::response::Html;

/// A human-readable view of `/openapi.json` (development and staging only). The page loads
/// Redoc from its CDN in the reader's browser; nothing is fetched by the server.
pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Xenios AI Backend API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/openapi.json"></redoc>
<script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
</body></html>"#,
    )
}
