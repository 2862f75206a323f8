<#
.SYNOPSIS
    Everyday commands for the Payout Requests Service on Windows (Docker Desktop).

.DESCRIPTION
    .\tasks.ps1 up          Build the image and start PostgreSQL, Redis, the API, the worker and beat
                            in the background; wait until http://127.0.0.1:8000/readyz answers.
    .\tasks.ps1 test        Run the test suite inside the web container (started for the run if
                            the stack is not up). Extra arguments go to `manage.py test`,
                            e.g. .\tasks.ps1 test payouts.tests.unit
    .\tasks.ps1 logs        Follow the logs (optionally of some services: .\tasks.ps1 logs web worker).
    .\tasks.ps1 down        Stop and remove the containers (.\tasks.ps1 down -Volumes also deletes
                            the PostgreSQL and Redis data).
    .\tasks.ps1 key NAME    Create an API client NAME and print its key (shown only once).
    .\tasks.ps1 help        Show this help.

    Settings come from a .env file next to docker-compose.yml (see .env.example).
    Works with Windows PowerShell 5.1 and PowerShell 7+.

.EXAMPLE
    .\tasks.ps1 up
    .\tasks.ps1 key acme
    .\tasks.ps1 test
    .\tasks.ps1 down
#>
[CmdletBinding()]
param(
    [Parameter(Position = 0)]
    [ValidateSet('up', 'test', 'logs', 'down', 'key', 'help')]
    [string]$Command = 'help',

    # Passed on to the underlying command (manage.py test labels, service names, ...).
    [Parameter(Position = 1, ValueFromRemainingArguments = $true)]
    [string[]]$Arguments = @(),

    # How long `up` waits for the API to become ready.
    [ValidateRange(10, 3600)]
    [int]$TimeoutSeconds = 300,

    # With `down`: also delete the named volumes (the database and the Redis data).
    [switch]$Volumes
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
# docker-compose.yml and .env are found relative to this script, wherever it is called from.
Set-Location -LiteralPath $PSScriptRoot

# The test suite's Celery worker uses its own Redis database, so the stack's running worker
# (database 0) never takes the tests' tasks; Django gives the tests their own test_ database.
$TestBrokerUrl = 'redis://redis:6379/15'

function Show-Help {
    Write-Host 'Payout Requests Service - Docker helper'
    Write-Host ''
    Write-Host '  .\tasks.ps1 up          build and start everything, wait until ready, print the URL'
    Write-Host '  .\tasks.ps1 test        run the test suite in the web container'
    Write-Host '  .\tasks.ps1 logs        follow the logs (optionally: .\tasks.ps1 logs web worker)'
    Write-Host '  .\tasks.ps1 down        stop everything (.\tasks.ps1 down -Volumes also deletes the data)'
    Write-Host '  .\tasks.ps1 key NAME    create an API client and print its key'
    Write-Host '  .\tasks.ps1 help        this help'
    Write-Host ''
    Write-Host '  Options: -TimeoutSeconds N (how long "up" waits for readiness; default 300)'
    Write-Host '  Arguments starting with "-" for docker compose or manage.py go after --,'
    Write-Host '  e.g. .\tasks.ps1 test -- --failfast payouts.tests.unit'
}

# Native commands report through exit codes; in Windows PowerShell 5.1 a redirected stderr line
# would otherwise become a terminating error under ErrorActionPreference=Stop.
function Assert-Compose {
    $ErrorActionPreference = 'Continue'
    if (-not (Get-Command docker -ErrorAction SilentlyContinue)) {
        throw 'docker was not found on PATH. Install Docker Desktop and start it, then try again.'
    }
    & docker compose version *> $null
    if ($LASTEXITCODE -ne 0) {
        throw '"docker compose" (Compose v2) is not available. Update Docker Desktop.'
    }
}

function Invoke-Compose {
    param([Parameter(Mandatory = $true)][string[]]$ComposeArgs)
    $ErrorActionPreference = 'Continue'
    Write-Host "> docker compose $($ComposeArgs -join ' ')" -ForegroundColor DarkGray
    & docker compose @ComposeArgs
    if ($LASTEXITCODE -ne 0) {
        throw "docker compose $($ComposeArgs[0]) failed (exit code $LASTEXITCODE)."
    }
}

function Test-ServiceRunning {
    param([Parameter(Mandatory = $true)][string]$Service)
    $ErrorActionPreference = 'Continue'
    $running = & docker compose ps --status running --services 2>$null
    if ($LASTEXITCODE -ne 0 -or -not $running) { return $false }
    return @($running) -contains $Service
}

function Get-WebUrl {
    # The host port comes from the compose file (127.0.0.1:${PORT:-8000}); ask compose for it.
    $ErrorActionPreference = 'Continue'
    $published = & docker compose port web 8000 2>$null
    if ($LASTEXITCODE -eq 0 -and $published) {
        $hostPort = (@($published)[0]).Trim() -replace '^0\.0\.0\.0:', '127.0.0.1:'
        return "http://$hostPort"
    }
    return 'http://127.0.0.1:8000'
}

function Wait-Ready {
    param([Parameter(Mandatory = $true)][string]$Url, [int]$Timeout)
    $deadline = (Get-Date).AddSeconds($Timeout)
    Write-Host "Waiting for $Url/readyz (up to $Timeout s) " -NoNewline
    while ((Get-Date) -lt $deadline) {
        try {
            $response = Invoke-WebRequest -Uri "$Url/readyz" -UseBasicParsing -TimeoutSec 5
            if ($response.StatusCode -eq 200) {
                Write-Host ' ready.'
                return $true
            }
        }
        catch {
            # Not listening yet, or 503 while the database or the broker is still starting.
        }
        Write-Host '.' -NoNewline
        Start-Sleep -Seconds 2
    }
    Write-Host ' timed out.'
    return $false
}

function Invoke-Up {
    Invoke-Compose (@('up', '--build', '--detach') + $Arguments)
    $url = Get-WebUrl
    if (-not (Wait-Ready -Url $url -Timeout $TimeoutSeconds)) {
        $ErrorActionPreference = 'Continue'
        & docker compose ps
        & docker compose logs --tail 50 migrate web
        throw "The API did not become ready within $TimeoutSeconds s (see the logs above)."
    }
    Write-Host ''
    Write-Host "Payout Requests Service is running on $url" -ForegroundColor Green
    Write-Host "  API docs:      $url/api/docs/"
    Write-Host "  Admin:         $url/admin/   (docker compose exec web python manage.py createsuperuser)"
    Write-Host '  API key:       .\tasks.ps1 key NAME'
    Write-Host '                 (or: docker compose exec web python manage.py create_api_client NAME)'
    Write-Host '  Logs / stop:   .\tasks.ps1 logs   /   .\tasks.ps1 down'
}

function Invoke-Test {
    $testArgs = @('python', 'manage.py', 'test', '-v', '2', '--noinput', '--parallel', '1') + $Arguments
    if (Test-ServiceRunning -Service 'web') {
        Invoke-Compose (@('exec', '-T', '-e', "CELERY_BROKER_URL=$TestBrokerUrl", 'web') + $testArgs)
    }
    else {
        # Starts db, redis and migrate as needed, runs the suite in a throwaway web container.
        Invoke-Compose (@('run', '--rm', '--build', '-e', "CELERY_BROKER_URL=$TestBrokerUrl", 'web') + $testArgs)
    }
}

function Invoke-Key {
    if ($Arguments.Count -ne 1 -or [string]::IsNullOrWhiteSpace($Arguments[0])) {
        throw 'Usage: .\tasks.ps1 key NAME   (one client name, e.g. .\tasks.ps1 key acme)'
    }
    if (-not (Test-ServiceRunning -Service 'web')) {
        throw 'The stack is not running: start it with .\tasks.ps1 up'
    }
    Invoke-Compose @('exec', '-T', 'web', 'python', 'manage.py', 'create_api_client', $Arguments[0])
}

try {
    switch ($Command) {
        'help' { Show-Help; exit 0 }
        'up' { Assert-Compose; Invoke-Up }
        'test' { Assert-Compose; Invoke-Test }
        'logs' { Assert-Compose; Invoke-Compose (@('logs', '--follow') + $Arguments) }
        'down' {
            Assert-Compose
            $downArgs = @('down')
            if ($Volumes) { $downArgs += '--volumes' }
            Invoke-Compose ($downArgs + $Arguments)
        }
        'key' { Assert-Compose; Invoke-Key }
    }
    exit 0
}
catch {
    Write-Host "tasks.ps1 $Command`: $($_.Exception.Message)" -ForegroundColor Red
    exit 1
}
