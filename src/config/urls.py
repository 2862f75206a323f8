from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payouts.admin import operations_view
from payouts.health import healthz, readyz
from payouts.observability.exposition import metrics_view

urlpatterns = [
    path("api/v1/", include("payouts.api.urls")),
    path("api/v1/", include("webhooks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    # Before admin.site.urls, whose catch-all would answer it with a 404.
    path("admin/operations/", admin.site.admin_view(operations_view), name="admin-operations"),
    path("admin/", admin.site.urls),
]

handler400 = "payouts.api.errors.handler400"
handler403 = "payouts.api.errors.handler403"
handler404 = "payouts.api.errors.handler404"
handler500 = "payouts.api.errors.handler500"
