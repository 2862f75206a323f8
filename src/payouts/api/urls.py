from rest_framework.routers import SimpleRouter

from .views import PayoutRequestViewSet

router = SimpleRouter()
router.register("payout-requests", PayoutRequestViewSet, basename="payout-request")

urlpatterns = router.urls
