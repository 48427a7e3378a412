"""A detector image in (q, χ): pyFAI-like 2-D histogram without pixel splitting.

Built once per geometry (each valid pixel's bin), applied to any per-pixel image: a bin
holds the mean (or maximum) of the values of the pixels whose centres fall in it, NaN when
none does — an empty bin is not a zero count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from processors.pattern_kernel import max_per_bin


@dataclass(frozen=True)
class PolarHistogram:
    """Bins of q (1/Å, ``q_edges`` ``[nq + 1]``) × χ (degrees, ``chi_edges`` ``[nchi + 1]``, −180…180).

    ``bin_index`` int64 ``[rows * cols]``: ``iq * nchi + ichi`` of each pixel, −1 when masked
    or outside the q range.
    """

    q_edges: np.ndarray = field(repr=False)
    chi_edges: np.ndarray = field(repr=False)
    bin_index: np.ndarray = field(repr=False)

    @property
    def nq(self) -> int:
        return self.q_edges.size - 1

    @property
    def nchi(self) -> int:
        return self.chi_edges.size - 1

    def apply(self, image: np.ndarray, reduce: str = "mean") -> np.ndarray:
        """float64 ``(nq, nchi)``: the ``reduce`` ("mean" or "max") of ``image``'s finite values per bin."""
        values = np.ascontiguousarray(image, dtype=np.float64).reshape(-1)
        if values.size != self.bin_index.size:
            raise ValueError(f"image of {values.size} pixels, histogram built for {self.bin_index.size}")
        n = self.nq * self.nchi
        use = (self.bin_index >= 0) & np.isfinite(values)
        if reduce == "mean":
            sums = np.bincount(self.bin_index[use], weights=values[use], minlength=n)
            counts = np.bincount(self.bin_index[use], minlength=n)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        elif reduce == "max":
            out = np.full(n, -np.inf)
            max_per_bin(values, self.bin_index, out)
            out[np.isneginf(out)] = np.nan
        else:
            raise ValueError(f"unknown reduction {reduce!r}; use 'mean' or 'max'")
        return out.reshape(self.nq, self.nchi)


def build_polar_histogram(q_A: np.ndarray, chi_deg: np.ndarray, mask: np.ndarray, *, nq: int = 500,
                          nchi: int = 360, q_range: tuple[float, float] | None = None) -> PolarHistogram:
    """Histogram bins for per-pixel ``q_A`` (1/Å) and ``chi_deg`` (pyFAI χ, (−180, 180]).

    ``q_range`` defaults to the valid pixels' q span. χ bins cover −180…180 (χ = 180 falls
    in the last bin). ``mask`` bool, True = leave the pixel out.
    """
    if nq < 1 or nchi < 1:
        raise ValueError(f"need at least one bin along each axis, got nq={nq}, nchi={nchi}")
    valid = ~np.asarray(mask, dtype=bool) & np.isfinite(q_A) & np.isfinite(chi_deg)
    if q_range is None:
        if not valid.any():
            raise ValueError("every pixel is masked: nothing to histogram")
        q_range = (float(q_A[valid].min()), float(q_A[valid].max()))
    q_lo, q_hi = q_range
    if not q_hi > q_lo:
        q_hi = q_lo + 1e-6
    q_edges = np.linspace(q_lo, q_hi, nq + 1)
    chi_edges = np.linspace(-180.0, 180.0, nchi + 1)
    with np.errstate(invalid="ignore"):  # NaN coordinates are masked out below
        iq = np.floor((q_A - q_lo) / ((q_hi - q_lo) / nq)).astype(np.int64)
        ic = np.clip(np.floor((chi_deg + 180.0) / (360.0 / nchi)).astype(np.int64), 0, nchi - 1)
    iq[q_A == q_hi] = nq - 1  # the largest q belongs to the last bin, as in numpy.histogram
    inside = valid & (iq >= 0) & (iq < nq)
    index = np.where(inside, iq * nchi + ic, -1).reshape(-1)
    return PolarHistogram(q_edges=q_edges, chi_edges=chi_edges, bin_index=np.ascontiguousarray(index))
