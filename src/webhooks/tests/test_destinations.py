"""check_destination: which URLs webhooks may be sent to (real resolution, no network needed:
IP literals resolve to themselves, `localhost` from /etc/hosts, `.invalid` never)."""

from django.test import SimpleTestCase, override_settings

from webhooks import destinations
from webhooks.destinations import UnsafeDestination, check_destination

PUBLIC_V4 = "https://93.184.216.34/hooks"
PUBLIC_V6 = "https://[2606:2800:220:1:248:1893:25c8:1946]/hooks"


@override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=False, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False)
class StrictDestinationTests(SimpleTestCase):
    """Production's rules: https only, public addresses only."""

    def assertRefused(self, url: str, code: str) -> str:
        with self.assertRaises(UnsafeDestination) as caught:
            check_destination(url)
        self.assertEqual(caught.exception.code, code, caught.exception.message)
        self.assertIn(caught.exception.code, destinations.CODES)
        self.assertTrue(caught.exception.message)
        return caught.exception.message

    def test_public_https_urls_pass(self) -> None:
        for url in (
            PUBLIC_V4,
            PUBLIC_V6,
            "https://93.184.216.34:8443/a/b?c=d",
            "HTTPS://93.184.216.34/upper-case-scheme",
        ):
            with self.subTest(url=url):
                check_destination(url)  # raises if refused

    def test_http_is_refused_with_its_own_code(self) -> None:
        message = self.assertRefused("http://93.184.216.34/hooks", destinations.NOT_HTTPS)
        self.assertIn("https", message)

    def test_loopback_private_link_local_and_other_non_public_addresses_are_refused(self) -> None:
        cases = {
            "https://127.0.0.1/": "loopback",
            "https://127.1/": "loopback",  # inet_aton's short form
            "https://0x7f000001/": "loopback",  # and its hexadecimal one
            "https://localhost:8443/": "loopback",  # resolved, not matched by name
            "https://[::1]/": "loopback",
            "https://10.1.2.3/": "private",
            "https://172.16.0.1/": "private",
            "https://192.168.1.1/": "private",
            "https://[fd00::1]/": "private",
            "https://169.254.169.254/latest/meta-data/": "link-local",  # cloud metadata
            "https://[fe80::1]/": "link-local",
            "https://224.0.0.1/": "multicast",
            "https://[ff02::1]/": "multicast",
            "https://0.0.0.0/": "unspecified",
            "https://[::]/": "unspecified",
            "https://240.0.0.1/": "reserved",
            "https://100.64.0.1/": "non-global",  # carrier-grade NAT
            # IPv4 inside IPv6 reaches the IPv4 host: judged as that host.
            "https://[::ffff:127.0.0.1]/": "loopback",
            "https://[::ffff:10.0.0.1]/": "private",
            "https://[2002:7f00:1::]/": "loopback",  # 6to4 of 127.0.0.1
        }
        for url, kind in cases.items():
            with self.subTest(url=url):
                message = self.assertRefused(url, destinations.PRIVATE)
                self.assertIn(f"a {kind} address", message)

    def test_a_name_that_does_not_resolve_is_refused(self) -> None:
        message = self.assertRefused(
            "https://no-such-host.invalid/hooks", destinations.UNRESOLVABLE
        )
        self.assertIn("no-such-host.invalid", message)

    def test_malformed_urls_are_invalid(self) -> None:
        for url in (
            "",
            "hooks.example.com/webhooks",  # no scheme
            "//93.184.216.34/hooks",
            "https:///hooks",  # no host
            "https://",
            "ftp://93.184.216.34/",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "https://93.184.216.34:99999/",  # port out of range
            "https://93.184.216.34:0/",
            "https://93.184.216.34:abc/",
            "https://[::1/",  # unbalanced bracket
            "https://93.184.216.34/a b",
            "https://93.184.216.34/\x00",
            "https://93.184.216.34/\n",
            " https://93.184.216.34/",
            "https://user:secret@93.184.216.34/",
            "https://user@93.184.216.34/",
            "https://93.184.216.34/" + "a" * 2048,
        ):
            with self.subTest(url=url[:60]):
                self.assertRefused(url, destinations.INVALID)

    def test_non_strings_are_invalid(self) -> None:
        for value in (None, 42, b"https://93.184.216.34/", ["https://93.184.216.34/"]):
            with self.subTest(value=value):
                self.assertRefused(value, destinations.INVALID)  # type: ignore[arg-type]

    def test_hostile_host_names_are_refused_without_crashing(self) -> None:
        for url in (
            "https://" + "a" * 64 + ".example/",  # a DNS label over 63 characters
            "https://xn--/",  # a broken IDNA label
            "https://\u2100.example/",  # a character IDNA cannot encode
            "https://..../",
            "https://-.example/",
        ):
            with self.subTest(url=url):
                with self.assertRaises(UnsafeDestination) as caught:
                    check_destination(url)
                self.assertIn(
                    caught.exception.code, (destinations.INVALID, destinations.UNRESOLVABLE)
                )


@override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=True, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=True)
class RelaxedDestinationTests(SimpleTestCase):
    """Local runs and tests: plain http and local receivers are allowed."""

    def test_local_http_receivers_pass(self) -> None:
        for url in (
            "http://127.0.0.1:9000/hooks",
            "http://localhost:9000/hooks",
            "http://[::1]:9000/",
            "https://10.0.0.5/",
        ):
            with self.subTest(url=url):
                check_destination(url)  # raises if refused

    def test_the_rest_still_holds(self) -> None:
        for url, code in (
            ("ftp://127.0.0.1/", destinations.INVALID),
            ("http://user:pw@127.0.0.1/", destinations.INVALID),
            ("http://no-such-host.invalid/", destinations.UNRESOLVABLE),
        ):
            with self.subTest(url=url), self.assertRaises(UnsafeDestination) as caught:
                check_destination(url)
            self.assertEqual(caught.exception.code, code)

    @override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=False)
    def test_each_relaxation_is_its_own(self) -> None:
        with self.assertRaises(UnsafeDestination) as caught:
            check_destination("http://127.0.0.1:9000/")
        self.assertEqual(caught.exception.code, destinations.NOT_HTTPS)
        check_destination("https://127.0.0.1:9000/")  # raises if refused
