"""Trade statistics for the end-of-run summary: trades, win rate, PnL, fees, max drawdown."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.trading.models import ClosedTrade


@dataclass
class TradeStats:
    starting_equity: float
    trades: int = 0
    wins: int = 0
    gross_pnl: float = 0.0
    fees: float = 0.0
    max_drawdown: float = 0.0
    _peak: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._peak = self.starting_equity

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.fees

    @property
    def equity(self) -> float:
        return self.starting_equity + self.net_pnl

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0

    def record(self, trade: ClosedTrade) -> None:
        self.trades += 1
        self.wins += trade.net_pnl > 0
        self.gross_pnl += trade.gross_pnl
        self.fees += trade.fees
        self._peak = max(self._peak, self.equity)
        self.max_drawdown = max(self.max_drawdown, self._peak - self.equity)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "trades": self.trades,
            "wins": self.wins,
            "losses": self.trades - self.wins,
            "win_rate": round(self.win_rate, 4),
            "gross_pnl": round(self.gross_pnl, 6),
            "fees": round(self.fees, 6),
            "net_pnl": round(self.net_pnl, 6),
            "max_drawdown": round(self.max_drawdown, 6),
            "equity": round(self.equity, 6),
        }

    def format(self) -> str:
        d = self.as_dict()
        return (
            f"Trades: {d['trades']} (wins {d['wins']}, losses {d['losses']}, win rate {self.win_rate:.1%})\n"
            f"PnL: gross {self.gross_pnl:+.4f}, fees {self.fees:.4f}, net {self.net_pnl:+.4f}\n"
            f"Max drawdown: {self.max_drawdown:.4f}   Equity: {self.equity:.2f} (start {self.starting_equity:.2f})"
        )
