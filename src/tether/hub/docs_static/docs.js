// Swagger UI for /docs, with nothing from outside the hub: the spec's URL comes
// from the page (data-spec), the validator badge (which would call
// validator.swagger.io) is off, and no inline script is needed.
"use strict";
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    persistAuthorization: false,
    displayRequestDuration: true,
    tryItOutEnabled: false,
  });
});
