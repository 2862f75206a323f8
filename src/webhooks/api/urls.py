from payouts.api.urls import OptionalSlashRouter

from .views import EventViewSet, WebhookEndpointViewSet

router = OptionalSlashRouter()
router.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("events", EventViewSet, basename="event")

urlpatterns = router.urls
