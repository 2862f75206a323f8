from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payouts.health import healthz, readyz

urlpatterns = [
    path("api/v1/", include("payouts.api.urls")),
    path("api/v1/", include("webhooks.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
]

handler400 = "payouts.api.errors.handler400"
handler403 = "payouts.api.errors.handler403"
handler404 = "payouts.api.errors.handler404"
handler500 = "payouts.api.errors.handler500"
