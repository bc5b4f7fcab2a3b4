// The API explorer: Swagger UI on this gateway's own document. "Authorize"
// takes an API key or a bearer JWT, kept for the session; "Try it out" calls
// the API from this page (same origin).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: true,
  displayRequestDuration: true,
  docExpansion: "list",
  filter: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
