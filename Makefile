# Payout Requests Service: the everyday commands. `make help` lists them.
# Works on a fresh Debian/Ubuntu with Python 3.10+; the virtualenv lives in .venv/.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Stamps: requirements are re-installed only when a requirements file changed.
LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP := $(VENV)/.installed-dev
COMPOSE ?= docker compose
TEST_ARGS ?=

.PHONY: help run webhook-listen test bench lint compose-smoke openapi fmt migrate superuser up down logs venv clean

help: ## Show this help
	@echo "Payout Requests Service"
	@echo
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'
	@echo
	@echo "  PORT=8001 make run         serve on another port"
	@echo "  make test TEST_ARGS=payouts.tests.unit   run part of the suite"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null || { \
		echo "error: Python 3.10+ is required as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1))." >&2; \
		echo "       Install it (sudo apt-get install python3) or run: make PYTHON=python3.12 ..." >&2; \
		exit 1; }
	@$(PYTHON) -m venv $(VENV) || { \
		rm -rf $(VENV); \
		ver=$$($(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'); \
		echo >&2; \
		echo "error: could not create a virtualenv: the venv/ensurepip module is missing." >&2; \
		echo "       On Debian/Ubuntu install it with:" >&2; \
		echo "           sudo apt-get install python3-venv   (or python$$ver-venv)" >&2; \
		echo "       then run make again." >&2; \
		exit 1; }

$(LOCAL_STAMP): requirements.txt requirements-local.txt | $(PY)
	$(PIP) install -r requirements-local.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-local.txt requirements-dev.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	@touch $@ $(LOCAL_STAMP)

venv: $(DEV_STAMP) ## Create .venv with the runtime, local and dev requirements

run: $(LOCAL_STAMP) ## Run API, worker, beat (+ Redis) on 127.0.0.1:PORT (8000); Ctrl-C stops all
	DJANGO_ENV=local $(PY) scripts/local/bootstrap.py

WEBHOOK_LISTEN_PORT ?= 8787
webhook-listen: $(LOCAL_STAMP) ## Print webhooks sent to 127.0.0.1:8787, verified with WEBHOOK_SECRET
	WEBHOOK_LISTEN_PORT=$(WEBHOOK_LISTEN_PORT) $(PY) scripts/webhook_listen.py

test: $(DEV_STAMP) ## Run the whole suite against a throwaway PostgreSQL and Redis
	scripts/test_services.sh $(PY) src/manage.py test -v 2 --noinput --parallel 1 $(TEST_ARGS)

# wrk comes from Debian; as root it is installed when missing.
bench: $(LOCAL_STAMP) ## Throughput against a bare Django view (wrk, ~15 min); prints the table
	@command -v wrk >/dev/null || { [[ "$$(id -u)" == 0 ]] && apt-get install -y -q wrk </dev/null; } \
		|| { echo "error: wrk is missing: sudo apt-get install wrk" >&2; exit 1; }
	TEST_SERVICES_PG_CONF="shared_preload_libraries = 'pg_stat_statements'" \
		scripts/test_services.sh $(PY) bench/run.py

lint: $(DEV_STAMP) ## ruff check, ruff format --check, mypy, compose schema and monitoring checks
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DJANGO_ENV=local $(VENV)/bin/mypy
	$(PY) scripts/check_compose.py
	$(PY) scripts/check_monitoring.py

compose-smoke: $(DEV_STAMP) ## Run every compose service as the image would, no container engine
	scripts/test_services.sh $(PY) scripts/compose_smoke.py

openapi: $(DEV_STAMP) ## Regenerate docs/openapi.yaml (validated, warnings are errors)
	DJANGO_ENV=local $(PY) src/manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

fmt: $(DEV_STAMP) ## Format and auto-fix with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: $(LOCAL_STAMP) ## Apply database migrations (DATABASE_URL or .local/db.sqlite3)
	DJANGO_ENV=local $(PY) src/manage.py migrate

superuser: $(LOCAL_STAMP) ## Create an admin login for /admin/
	DJANGO_ENV=local $(PY) src/manage.py createsuperuser

UP_TIMEOUT ?= 300
up: ## Build and start PostgreSQL, Redis, web, worker, beat; wait until healthy, print the URL
	@if $(COMPOSE) up --build --detach --wait --wait-timeout $(UP_TIMEOUT); then \
		url=$$($(COMPOSE) port web 8000 2>/dev/null | sed 's/^0\.0\.0\.0:/127.0.0.1:/'); \
		echo; \
		echo "Payout Requests Service is healthy on http://$${url:-127.0.0.1:8000}"; \
		echo "  API key:  $(COMPOSE) exec web python manage.py create_api_client NAME"; \
		echo "  make logs to follow, make down to stop"; \
	else \
		status=$$?; \
		echo; \
		echo "error: the stack is not healthy (docker compose up exit $$status; it waits $(UP_TIMEOUT) s):" >&2; \
		$(COMPOSE) ps --all >&2; \
		$(COMPOSE) logs --tail 40 migrate web worker beat >&2; \
		exit 1; \
	fi

down: ## docker compose down
	$(COMPOSE) down

logs: ## Follow the docker compose logs
	$(COMPOSE) logs -f

clean: ## Remove .venv and tool caches (keeps .local/ data)
	rm -rf $(VENV) .mypy_cache .ruff_cache
