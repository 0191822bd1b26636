"""``ds01 catalog list``: the framework images containers can be created from."""

from __future__ import annotations

import typer

from ds01.cli.common import JSON_OPTION, flush_warnings, make_context
from ds01.cli.options import text_option

app = typer.Typer(help="AIME's framework catalog.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    framework: str = text_option("--framework", "-f", help="Only this framework."),
    arch: str = text_option("--arch", help="Only images for this architecture."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List catalog images (framework, version, architectures, image)."""
    from ds01.services.catalog import catalog_rows

    app_ctx = make_context(ctx)
    rows = catalog_rows(app_ctx, framework=framework, arch=arch)
    app_ctx.warnings.extend(app_ctx.catalog.warnings)
    flush_warnings(app_ctx)
    if json_out:
        from ds01.cli.output import emit_json
        from ds01.serialize import to_json

        emit_json([to_json(r) for r in rows])
        return
    from ds01.cli.output import print_table

    print_table(
        None,
        ["FRAMEWORK", "VERSION", "ARCH", "IMAGE"],
        [[r.framework, r.version, ", ".join(r.archs), r.image] for r in rows],
        empty="No catalog entries match.",
    )
