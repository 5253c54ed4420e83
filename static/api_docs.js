// The API page: Swagger UI (vendored, static/vendor/swagger-ui/) renders the OpenAPI
// document named by #api-docs[data-spec]. Calls made with "Try it out" go to this same
// origin with the session cookie, and carry the session's CSRF token, as the pages' own
// requests do.

const root = document.getElementById("api-docs");
const blocked = document.getElementById("api-docs-blocked");
const SwaggerUIBundle = window.SwaggerUIBundle;

// What the site's Content-Security-Policy stops the viewer from doing is said above it,
// not left as a silently broken page.
document.addEventListener("securitypolicyviolation", (e) => {
  if (!blocked) return;
  blocked.hidden = false;
  const line = document.createElement("span");
  line.textContent = `The browser blocked part of the API viewer (${e.violatedDirective}` +
    `${e.blockedURI ? ": " + e.blockedURI : ""}). `;
  blocked.append(line);
});

// The document's title and introduction are the page's own heading and text above the
// viewer (one h1 per page), so the viewer does not repeat them.
const WithoutInfo = () => ({ wrapComponents: { InfoContainer: () => () => null } });

if (root && SwaggerUIBundle) {
  const csrf = root.dataset.csrf || "";
  root.replaceChildren();
  SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    plugins: [WithoutInfo],
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    tryItOutEnabled: false,
    // No request to a validator service elsewhere.
    validatorUrl: null,
    requestInterceptor: (req) => {
      const url = new URL(req.url, window.location.href);
      if (url.origin === window.location.origin && req.method && req.method !== "GET") {
        req.headers["X-CSRF-Token"] = csrf;
      }
      return req;
    },
  });
} else if (root) {
  root.textContent = "The API viewer could not be loaded; the document is at " + root.dataset.spec + ".";
}
