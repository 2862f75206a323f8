from rest_framework.routers import SimpleRouter

from .views import PayoutRequestViewSet


class OptionalSlashRouter(SimpleRouter):
    """Routes that match with or without the trailing slash.

    A POST to ".../payout-requests" would otherwise get Django's APPEND_SLASH redirect, which
    HTTP clients follow as a GET: the payout would silently not be created.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("payout-requests", PayoutRequestViewSet, basename="payout-request")

urlpatterns = router.urls
