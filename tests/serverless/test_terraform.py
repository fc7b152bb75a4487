"""The Terraform module, checked offline: formatting, every argument and reference against the
providers' documentation (tests/serverless/aws_attributes.py), and the wiring against the code —
handlers, environment variables, IAM, the schedule's and migration's payloads, metric names.

Where the AWS provider is installed locally (a plugin directory such as /opt/tf-plugins; providers
are never downloaded), the module is also `terraform init`ed from it, `terraform validate`d, and
its `terraform test` files run: mocked plans of the module and of both examples
(terraform/tests/*.tftest.hcl). Without a provider those three tests skip and say why."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hcl2
import pytest

from pgqueue import settings
from pgqueue.serverless import aws, kick, tick
from tests.serverless import aws_attributes
from tests.serverless.conftest import ROOT, load_handler

TF = ROOT / "terraform"
MODULE_FILES = (
    "versions.tf",
    "variables.tf",
    "outputs.tf",
    "main.tf",
    "lambda.tf",
    "api_gateway.tf",
    "scheduler.tf",
    "iam.tf",
    "secrets.tf",
    "rds.tf",
    "alarms.tf",
    "realtime.tf",
)


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return dict(hcl2.load(f))


def load_text(text: str) -> dict[str, Any]:
    return dict(hcl2.loads(text))


def module() -> dict[str, dict[str, Any]]:
    """Every block of the module by kind: {'resource': {(type, name): body}, 'data': ..., 'variable':
    {name: body}, 'output': ..., 'locals': {name: expression}}."""
    out: dict[str, dict[Any, Any]] = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    for path in sorted(TF.glob("*.tf")):
        parsed = load(path)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        out[kind][(unquote(rtype), unquote(name))] = body
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                for name, body in block.items():
                    out[kind][unquote(name)] = body
        for block in parsed.get("locals", []):
            out["locals"].update({k: v for k, v in block.items() if not k.startswith("__")})
    return out


# -- the checker ------------------------------------------------------------------------------------

_RESOURCE_REF = re.compile(
    r"(?<![\w.])((?:aws|random)_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)"
)
_DATA_REF = re.compile(r"\bdata\.((?:aws|random)_[a-z0-9_]+)\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")


def _check_body(body: dict[str, Any], schema: dict[str, Any], where: str) -> Iterator[str]:
    for key, value in body.items():
        if key.startswith("__"):
            continue
        if key in aws_attributes.META_ARGUMENTS:
            continue
        if key == "dynamic":
            for dyn in value:
                for block_name, dyn_body in dyn.items():
                    block_name = unquote(block_name)
                    if block_name not in schema or not isinstance(schema[block_name], dict):
                        yield f"{where}: dynamic block {block_name!r} is not a block of this type"
                        continue
                    for content in dyn_body.get("content", []):
                        yield from _check_body(content, schema[block_name], f"{where}.{block_name}")
            continue
        if key not in schema:
            yield f"{where}: unknown argument {key!r}"
            continue
        if isinstance(schema[key], dict):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                yield f"{where}: {key!r} is a block, written as an argument"
                continue
            for block in value:
                yield from _check_body(block, schema[key], f"{where}.{key}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def violations(parsed_files: list[dict[str, Any]]) -> list[str]:
    """Every argument or reference not in the documented schema (see aws_attributes)."""
    found: list[str] = []
    declared: dict[tuple[str, str, str], str] = {}
    for parsed in parsed_files:
        for kind, catalogue in (
            ("resource", aws_attributes.RESOURCES),
            ("data", aws_attributes.DATA_SOURCES),
        ):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    rtype = unquote(rtype)
                    for name, body in named.items():
                        name = unquote(name)
                        declared[(kind, rtype, name)] = rtype
                        if rtype not in catalogue:
                            found.append(f"{kind} {rtype}.{name}: type not in the allow-list")
                            continue
                        found.extend(_check_body(body, catalogue[rtype]["arguments"], f"{rtype}.{name}"))
    for parsed in parsed_files:
        for text in _strings(parsed):
            for pattern, kind, catalogue in (
                (_DATA_REF, "data", aws_attributes.DATA_SOURCES),
                (_RESOURCE_REF, "resource", aws_attributes.RESOURCES),
            ):
                for rtype, name, attr in pattern.findall(text):
                    if (kind, rtype, name) not in declared:
                        found.append(f"reference to undeclared {kind} {rtype}.{name}")
                        continue
                    spec = catalogue.get(rtype)
                    if spec and attr not in spec["exported"] and attr not in spec["arguments"]:
                        found.append(f"{rtype}.{name}.{attr}: not an attribute of {rtype}")
    return sorted(set(found))


# -- formatting and the allow-list ------------------------------------------------------------------


def test_terraform_fmt_check() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.fail("terraform is not installed (the CI image has 1.11)")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


EXAMPLES = ("basic", "vpc")


def test_the_module_has_the_conventional_files() -> None:
    for name in (
        *MODULE_FILES,
        "README.md",
        *(f"examples/{ex}/{file}" for ex in EXAMPLES for file in ("main.tf", "versions.tf", "outputs.tf")),
        "tests/module.tftest.hcl",
        "tests/examples.tftest.hcl",
    ):
        assert (TF / name).is_file(), name


def test_only_the_aws_provider_bounded_above() -> None:
    for path in (TF / "versions.tf", *(TF / "examples" / e / "versions.tf" for e in EXAMPLES)):
        [terraform] = load(path)["terraform"]
        [providers] = terraform["required_providers"]
        names = {unquote(k) for k in providers if not k.startswith("__")}
        assert names == {"aws"}, (path, "no random provider: generated values come from AWS")
        version = unquote(providers["aws"]["version"])
        assert re.fullmatch(r">= 5\.\d+, < 7", version), (path, version)
    # and nothing in the module still uses another provider's resources
    for path in TF.rglob("*.tf"):
        assert not re.search(r"\brandom_[a-z]+\.", path.read_text()), path


def test_every_argument_and_reference_is_documented() -> None:
    parsed = [load(path) for path in sorted(TF.rglob("*.tf"))]
    assert violations(parsed) == []


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            'resource "aws_lambda_function" "x" {\n  function_name = "f"\n  role = "r"\n  timout = 3\n}\n',
            "aws_lambda_function.x: unknown argument 'timout'",
        ),
        (
            'resource "aws_lambda_function" "x" {\n  function_name = "f"\n'
            '  vpc_config {\n    subnet_id = []\n  }\n}\n',
            "aws_lambda_function.x.vpc_config: unknown argument 'subnet_id'",
        ),
        (
            'resource "aws_scheduler_schedule" "s" {\n  schedule_expression = "rate(1 minute)"\n'
            '  target {\n    arn = "a"\n    role_arn = "r"\n'
            '    retry_policy {\n      maximum_retries = 0\n    }\n  }\n}\n',
            "aws_scheduler_schedule.s.target.retry_policy: unknown argument 'maximum_retries'",
        ),
        (
            'resource "aws_lambda_function" "x" {\n  function_name = "f"\n}\n'
            'output "u" {\n  value = aws_lambda_function.x.invoke_url\n}\n',
            "aws_lambda_function.x.invoke_url: not an attribute of aws_lambda_function",
        ),
        (
            'resource "aws_lambda_function" "x" {\n  function_name = "f"\n  dynamic "vpc_conf" {\n'
            "    for_each = []\n    content {\n      subnet_ids = []\n    }\n  }\n}\n",
            "aws_lambda_function.x: dynamic block 'vpc_conf' is not a block of this type",
        ),
        (
            'resource "aws_lambda_fuction" "x" {\n  function_name = "f"\n}\n',
            "resource aws_lambda_fuction.x: type not in the allow-list",
        ),
        (
            'output "u" {\n  value = aws_iam_role.missing.arn\n}\n',
            "reference to undeclared resource aws_iam_role.missing",
        ),
    ],
    ids=["argument", "nested-block", "deeply-nested", "reference", "dynamic", "type", "undeclared"],
)
def test_the_checker_catches_misspellings(snippet: str, expected: str) -> None:
    assert expected in violations([load_text(snippet)])


def test_the_checker_accepts_a_correct_snippet() -> None:
    good = (
        'resource "aws_lambda_function" "x" {\n  function_name = "f"\n  role = "r"\n  timeout = 3\n'
        "  vpc_config {\n    subnet_ids = []\n    security_group_ids = []\n  }\n}\n"
        'output "u" {\n  value = aws_lambda_function.x.invoke_arn\n}\n'
    )
    assert violations([load_text(good)]) == []


# -- wiring against the code ------------------------------------------------------------------------


def test_handlers_exist_and_match_the_functions() -> None:
    resources = module()["resource"]
    for name, handler_file in (("api", "api_handler"), ("executor", "executor_handler")):
        fn = resources[("aws_lambda_function", name)]
        assert unquote(fn["handler"]) == f"{handler_file}.handler"
        source = (ROOT / "lambda" / f"{handler_file}.py").read_text()
        assert re.search(r"^def handler\(event: .*, context: .*\)", source, re.MULTILINE), handler_file
    assert not (ROOT / "lambda" / "__init__.py").exists()  # `lambda` is a keyword: plain files


def test_every_environment_variable_is_a_known_setting() -> None:
    known = {var for var in settings._ENV_FIELDS} | {aws.SECRET_ARN, aws.SSM_PARAMETER}
    texts = [(TF / name).read_text() for name in ("main.tf", "secrets.tf", "realtime.tf")]
    used = {m for text in texts for m in re.findall(r"\b(PGQUEUE_[A-Z0-9_]+|DATABASE_URL)\b", text)}
    assert used, "no environment variables found"
    injected = {var for var in used if aws.INJECTED_SECRET.fullmatch(var)}  # the realtime tasks' secrets
    assert injected == {"PGQUEUE_SECRET_VALUE_1", "PGQUEUE_SECRET_VALUE_2", "PGQUEUE_SECRET_VALUE_3"}
    assert used - injected <= known, sorted(used - injected - known)
    # the secret the module creates carries what Settings needs in production
    version = module()["resource"][("aws_secretsmanager_secret_version", "settings")]
    for key in ("DATABASE_URL", "PGQUEUE_SIGNING_KEY", "PGQUEUE_EVENT_KEYS"):
        assert key in version["secret_string"]
    locals_ = module()["locals"]
    # both functions reach the executor through its alias: the API's kicks, the executor's own
    # re-invocations; the executor alone creates one-time schedules
    assert "PGQUEUE_KICK_FUNCTION = local.executor_alias_qualified_name" in locals_["common_environment"]
    qualified = unquote(locals_["executor_alias_qualified_name"])
    assert qualified == "${local.executor_function_name}:${local.alias_name}"
    assert "local.common_environment" in locals_["api_environment"]
    assert 'PGQUEUE_POOLER = "1"' in locals_["common_environment"]  # RDS Proxy / PgBouncer safe
    assert "local.common_environment" in locals_["executor_environment"]
    engine = settings.Settings.from_env({"PGQUEUE_POOLER": "1",
                                         "PGQUEUE_KICK_FUNCTION": "pgqueue-executor:live"})
    assert engine.pooler is True and engine.kick_function == "pgqueue-executor:live"


def _policy_statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    statements = list(doc.get("statement", []))
    for dyn in doc.get("dynamic", []):
        for _, body in dyn.items():
            statements.extend(body.get("content", []))
    return statements


ALLOWED_ACTIONS = {
    "sts:AssumeRole",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
    "ssm:GetParameters",  # ECS injecting a parameter into a task (realtime)
    "kms:Decrypt",
    "lambda:InvokeFunction",
    "scheduler:CreateSchedule",
    "scheduler:DeleteSchedule",
    "scheduler:GetSchedule",
    "iam:PassRole",
}


def test_iam_is_least_privilege() -> None:
    data = module()["data"]
    docs = {name: body for (rtype, name), body in data.items() if rtype == "aws_iam_policy_document"}
    actions_by_doc = {}
    for name, doc in docs.items():
        statements = _policy_statements(doc)
        actions = {unquote(a) for s in statements for a in s.get("actions", [])}
        assert actions <= ALLOWED_ACTIONS, (name, actions - ALLOWED_ACTIONS)
        assert not any("*" in a for a in actions), name
        for statement in statements:
            assert statement.get("resources") != ['"*"'], f"{name}: a statement on every resource"
            assert unquote(statement.get("effect", '"Allow"')) == "Allow"
        actions_by_doc[name] = (actions, statements)

    def invoke_targets(doc: str) -> list[Any]:
        _, statements = actions_by_doc[doc]
        return [
            s["resources"]
            for s in statements
            if '"lambda:InvokeFunction"' in s.get("actions", [])
            or "lambda:InvokeFunction" in s.get("actions", [])
        ]

    # the API, the schedules and the executor itself invoke the executor's alias and nothing else
    assert invoke_targets("api") == [["${aws_lambda_alias.executor.arn}"]]
    assert invoke_targets("scheduler") == [["${aws_lambda_alias.executor.arn}"]]
    assert invoke_targets("executor_wakeups") == [["${aws_lambda_alias.executor.arn}"]]
    assert invoke_targets("executor") == []
    # the executor may invoke its own alias and nothing else besides its base policy
    _, wakeups = actions_by_doc["executor_wakeups"]
    assert len(wakeups) == 1 and "lambda:InvokeFunction" in str(wakeups[0]["actions"])
    # the functions' own policies must not wait for the alias (a dependency cycle otherwise)
    assert "aws_lambda_alias" not in json.dumps(docs["executor"])
    # each function writes only its own log group
    assert "aws_cloudwatch_log_group.api.arn" in json.dumps(docs["api"])
    assert "aws_cloudwatch_log_group.executor" not in json.dumps(docs["api"])
    assert "aws_cloudwatch_log_group.executor.arn" in json.dumps(docs["executor"])


def test_every_function_has_a_log_group_with_retention() -> None:
    resources = module()["resource"]
    for name in ("api", "executor"):
        group = resources[("aws_cloudwatch_log_group", name)]
        assert unquote(group["name"]) == f"/aws/lambda/${{local.{name}_function_name}}"
        assert group["retention_in_days"] == "${var.log_retention_days}"
        fn = resources[("aws_lambda_function", name)]
        assert unquote(fn["function_name"]) == f"${{local.{name}_function_name}}"


def payload(expression: str) -> dict[str, str]:
    """The object of a `jsonencode({ key = "value", ... })` expression with string values."""
    match = re.fullmatch(r"\$\{jsonencode\(\{(.*)\}\)\}", expression.strip(), re.DOTALL)
    assert match, expression
    pairs = re.findall(r'"?(\w+)"?\s*[=:]\s*"([^"]*)"', match.group(1))
    return dict(pairs)


def test_the_schedule_and_the_migration_send_payloads_the_executor_takes(lambda_env: dict[str, str]) -> None:
    resources = module()["resource"]
    schedule = resources[("aws_scheduler_schedule", "tick")]
    assert unquote(schedule["schedule_expression"]) == "${var.schedule_expression}"
    assert module()["variable"]["schedule_expression"]["default"] == '"rate(1 minute)"'
    [target] = schedule["target"]
    assert payload(target["input"]) == {"action": "tick"}
    [retry] = target["retry_policy"]
    assert retry["maximum_retry_attempts"] == 0
    migrate = resources[("aws_lambda_invocation", "migrate")]
    assert payload(migrate["input"]) == {"action": "migrate"}
    assert migrate["function_name"] == "${aws_lambda_function.executor.function_name}"
    invoke_config = resources[("aws_lambda_function_event_invoke_config", "executor")]
    assert invoke_config["maximum_retry_attempts"] == 0

    executor = load_handler("executor_handler")
    try:
        assert executor.action_of(payload(target["input"])) == "tick"
        assert executor.action_of(payload(migrate["input"])) == "migrate"
        assert executor.action_of(json.loads(json.dumps(kick.KICK_PAYLOAD))) == "kick"
    finally:
        executor._loop.close()


def test_new_code_is_reached_only_after_its_migrations() -> None:
    """Both functions publish versions; the migration runs on the executor's new version; the
    aliases, which every caller invokes, move only after it (depends_on)."""
    resources = module()["resource"]
    for name in ("api", "executor"):
        assert resources[("aws_lambda_function", name)]["publish"] is True, name
        alias = resources[("aws_lambda_alias", name)]
        assert alias["function_version"] == f"${{aws_lambda_function.{name}.version}}"
        assert alias["depends_on"] == ["${aws_lambda_invocation.migrate}"], name
    migrate = resources[("aws_lambda_invocation", "migrate")]
    assert migrate["qualifier"] == "${aws_lambda_function.executor.version}"
    assert migrate["triggers"] == {"version": "${aws_lambda_function.executor.version}"}
    # nothing invokes a bare function: every invoke path names the alias
    text = "\n".join(path.read_text() for path in TF.glob("*.tf"))
    assert "integration_uri        = aws_lambda_alias.api.invoke_arn" in text
    schedule = resources[("aws_scheduler_schedule", "tick")]
    assert schedule["target"][0]["arn"] == "${aws_lambda_alias.executor.arn}"
    for key, body in resources.items():
        if key[0] in ("aws_lambda_permission", "aws_lambda_function_url"):
            assert body["qualifier"] == "${aws_lambda_alias.api.name}", key
    assert resources[("aws_lambda_function_event_invoke_config", "executor")]["qualifier"] == (
        "${aws_lambda_alias.executor.name}"
    )


def test_alarms_watch_the_metrics_the_tick_publishes() -> None:
    resources = module()["resource"]
    published = set(tick.METRICS)
    custom = [
        body
        for (rtype, _), body in resources.items()
        if rtype == "aws_cloudwatch_metric_alarm" and unquote(body["namespace"]) == tick.METRICS_NAMESPACE
    ]
    assert {unquote(a["metric_name"]) for a in custom} == {"QueueDepth", "OldestDueAgeSeconds"}
    for alarm in custom:
        assert unquote(alarm["metric_name"]) in published
        assert set(alarm["dimensions"]) == {tick.METRICS_DIMENSION}
        assert alarm["dimensions"][tick.METRICS_DIMENSION] == "${aws_lambda_function.executor.function_name}"


def test_variables_outputs_and_the_readme_agree() -> None:
    mod = module()
    for name, body in mod["variable"].items():
        assert "description" in body and "type" in body, name
    for name, body in mod["output"].items():
        assert "description" in body, name
    expected_outputs = {
        "api_url",
        "api_function_arn",
        "executor_function_arn",
        "schedule_arn",
        "db_proxy_endpoint",
        "settings_secret_arn",
        "migration_result",
    }
    assert expected_outputs <= set(mod["output"])
    readme = (TF / "README.md").read_text()
    inputs, outputs = readme.split("## Inputs")[1].split("## Outputs")
    for name in mod["variable"]:
        assert f"| `{name}` |" in inputs, f"variable {name} missing from the README inputs table"
    for name in mod["output"]:
        assert f"| `{name}` |" in outputs, f"output {name} missing from the README outputs table"
    assert "terraform validate" in readme


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_example_uses_only_declared_inputs_and_outputs(example: str) -> None:
    mod = module()
    parsed = load(TF / "examples" / example / "main.tf")
    [block] = [b for b in parsed["module"] if '"pgqueue"' in b or "pgqueue" in b]
    body = block.get('"pgqueue"') or block["pgqueue"]
    assert unquote(body["source"]) == "../.."
    args = {k for k in body if not k.startswith("__") and k not in ("source", "depends_on")}
    assert args <= set(mod["variable"]), args - set(mod["variable"])
    required = {n for n, b in mod["variable"].items() if "default" not in b}
    assert required <= args
    outputs_text = (TF / "examples" / example / "outputs.tf").read_text()
    for used in re.findall(r"module\.pgqueue\.([a-z_]+)", outputs_text):
        assert used in mod["output"], used
    # the example's package is what scripts/build_lambda.py writes for its architecture
    arch = unquote(body["architecture"])
    assert f"pgqueue-lambda-{arch}.zip" in body["lambda_package_path"]


def test_the_vpc_example_reaches_every_aws_api_the_functions_call() -> None:
    """Inside a VPC the functions call Secrets Manager (settings), Lambda (kicks, self re-invoke)
    and EventBridge Scheduler (one-time wake-ups): interface endpoints for exactly those."""
    text = (TF / "examples" / "vpc" / "main.tf").read_text()
    [services] = re.findall(r"endpoint_services = .*?toset\(\[([^\]]*)\]\)", text)
    assert {unquote(s.strip()) for s in services.split(",")} == {"secretsmanager", "lambda", "scheduler"}


# -- terraform init / validate / test against the locally installed provider -----------------------

# Where a provider may be installed (filesystem-mirror layout: <dir>/registry.terraform.io/hashicorp/
# aws/<version>/<os_arch>/terraform-provider-aws_*); PGQUEUE_TF_PLUGIN_DIR names another.
PLUGIN_DIRS = (
    Path("/opt/tf-plugins"),
    Path.home() / ".terraform.d" / "plugins",
    Path("/usr/share/terraform/plugins"),
)
PROVIDER_GLOB = "registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*"


def plugin_dir() -> Path | None:
    named = os.environ.get("PGQUEUE_TF_PLUGIN_DIR")
    for folder in [*([Path(named)] if named else []), *PLUGIN_DIRS]:
        if folder.is_dir() and any(folder.glob(PROVIDER_GLOB)):
            return folder
    return None


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def terraform_checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """`terraform init` from the local provider in a copy of terraform/ (so the checkout gets no
    .terraform folder or lock file), then validate and both test files at once."""
    terraform, plugins = shutil.which("terraform"), plugin_dir()
    if terraform is None:
        pytest.fail("terraform is not installed (the CI image has 1.11)")
    if plugins is None:
        searched = ", ".join(str(p) for p in PLUGIN_DIRS)
        pytest.skip(
            f"no terraform-provider-aws binary in {searched} or $PGQUEUE_TF_PLUGIN_DIR"
            " (providers are never downloaded)"
        )
    root = tmp_path_factory.mktemp("terraform") / "terraform"
    shutil.copytree(
        TF, root, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*")
    )
    cli_config = root.parent / "terraformrc"
    cli_config.write_text("")  # no user CLI configuration, no plugin cache, no registry credentials
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(root.parent),
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    init = _run(
        [terraform, "init", f"-plugin-dir={plugins}", "-backend=false", "-input=false", "-no-color"],
        root,
        env,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {
            "validate": pool.submit(_run, [terraform, "validate", "-no-color"], root, env),
            "module": pool.submit(
                _run, [terraform, "test", "-no-color", "-filter=tests/module.tftest.hcl"], root, env
            ),
            "examples": pool.submit(
                _run, [terraform, "test", "-no-color", "-filter=tests/examples.tftest.hcl"], root, env
            ),
        }


def test_terraform_validate(terraform_checks: dict[str, Future[Any]]) -> None:
    done = terraform_checks["validate"].result()
    assert done.returncode == 0 and "The configuration is valid" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("test_file", ["module", "examples"])
def test_terraform_test_mocked_plans(terraform_checks: dict[str, Future[Any]], test_file: str) -> None:
    done = terraform_checks[test_file].result()
    out = done.stdout + done.stderr
    runs = re.findall(r'^\s+run "([a-z0-9_]+)"\.\.\. (\w+)$', done.stdout, re.MULTILINE)
    source = (TF / "tests" / f"{test_file}.tftest.hcl").read_text()
    declared = re.findall(r'^run "([a-z0-9_]+)"', source, re.MULTILINE)
    assert done.returncode == 0, out
    assert runs == [(name, "pass") for name in declared], out
