"""What a judge run costs: USD per 1M tokens from ``prompts/judge_prices.json`` (or the
``price_in`` / ``price_out`` overrides) and the cost of a token count."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from .options import JudgeOptions

__all__ = ["PRICES_PATH", "price_for", "cost_usd"]

PRICES_PATH = Path(__file__).parent.parent / "prompts" / "judge_prices.json"


def price_for(model: str, options: JudgeOptions, table_path: Path = PRICES_PATH) -> Optional[dict]:
    """USD per 1M tokens for ``model``: the overrides, else the table (exact name or a dated
    snapshot of it), else ``None`` (cost unknown)."""
    if options.price_in is not None:
        return {"input": float(options.price_in), "output": float(options.price_out), "source": "--price-in/--price-out"}
    table = json.loads(table_path.read_text(encoding="utf-8"))
    prices = table["usd_per_1m_tokens"]
    name = model.split("/")[-1]
    base = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", name)
    for candidate in (name, base):
        if candidate in prices:
            return {"input": float(prices[candidate]["input"]), "output": float(prices[candidate]["output"]),
                    "source": f"price table {table['version']} ({candidate})"}
    return None


def cost_usd(prompt_tokens: int, completion_tokens: int, price: Optional[dict]) -> Optional[float]:
    if price is None:
        return None
    return (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1e6
