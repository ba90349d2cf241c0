// Swagger UI for /docs: the schema comes from this service with the signed-in user's cookie.
window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
