"""2-D Gaussian + planar background fit of one Bragg spot on a polar (q, χ) patch.

Model (docs/fit_model.md)::

    I(q, φ) = A · exp{−4 ln2 [(q − q0)² / dq² + w(φ − φ0)² / dφ²]}
              + B + Bq·(q − qc) + Bchi·(χ − χc)
    w(x) = ((x + 180) mod 360) − 180

with (qc, χc) the window centre (mean of the bin centres), the Gaussian averaged over each
bin (``bin_integrated``, the default) or sampled at the bin centre.

Parameters, in this order everywhere (``PARAM_NAMES``): amplitude A and background B (at
the window centre) in counts per pixel, q0 and dq in 1/Å, phi0 and dphi in degrees, the
background slopes Bq (``background_dq``) in counts per pixel per 1/Å and Bchi
(``background_dchi``) in counts per pixel per degree; dq and dphi are FWHM. phi0 is
returned in the branch of ``chi_centers`` (a window 150°..210° gives 190°, not −170°): apply
w() for pyFAI's χ in (−180°, 180°].

Input: a patch of ``nq × nchi`` bins, ``sums`` (photon counts summed over the bin's pixels)
and ``counts`` (valid pixels in the bin; 0 = empty, no data — not a zero count). The fit is
least squares of the bin means with weight ``counts`` (unweighted least squares over the
pixels, each placed at its bin centre).

Use ``fit_gaussian2d`` (validates, allocates) for one-off fits; per frame, allocate once with
``make_fit_work`` and call ``fit_gaussian2d_into`` (no checks, no allocation; it is the numba
kernel itself, so other ``@njit`` code can call it too).

Status codes (``STATUS_NAMES``) and what decides them, see
``processors.gaussian2d_kernel.fit_gaussian2d_kernel``:

- FIT_TOO_FEW_BINS: fewer non-empty bins than ``max(min_bins, 9)``.
- FIT_NO_PEAK: the amplitude is not significant, A / σ_A < ``min_snr`` with σ_A its
  standard error below (position, widths, background free); or a fitted FWHM below half a
  detector pixel (unresolved: a hot pixel, even after the outlier rounds) or at the upper
  bound (2 × the window). Pure-noise windows
  are mostly rejected before any iteration by a box search (the best box of blocks has
  (n − μ)/√n below 0.8·min_snr), in a few µs.
- FIT_OUTSIDE_WINDOW: fitted centre at the window edge (the fit wanted it outside).
- FIT_NOT_CONVERGED: ``max_iterations`` model evaluations were not enough.
- FIT_SINGULAR: singular normal matrix or non-finite values; from the unvalidated
  ``fit_gaussian2d_into`` also when array sizes disagree or ``work`` is too small
  (``fit_gaussian2d`` raises a ValueError for those).

Outliers (``outlier_sigma`` > 0): isolated one-bin spikes are left out before the start
search, bins more than ``outlier_sigma`` Poisson standard deviations above the converged
model (and well above their neighbours) are left out and the fit repeated, and a fit that
collapsed onto a spike is restarted without it (docs/fit_model.md).

Standard errors: Poisson covariance H⁻¹(Σ c·f·J·Jᵀ)H⁻¹, H = Σ c·J·Jᵀ, f the fitted model
(its background taken at the spot centre), i.e. each pixel's variance is its expected counts. (s²·H⁻¹ with one s² for all pixels would
understate the errors of a strong spot on a weak background several times, because the
pixels that fix the spot's shape are the noisiest.) Inputs must therefore be photon counts.
"""

from __future__ import annotations

import numpy as np

from processors import gaussian2d_kernel as _kernel
from processors.frame_record import (
    FIT_NO_PEAK,
    FIT_NOT_CONVERGED,
    FIT_OK,
    FIT_OUTSIDE_WINDOW,
    FIT_SINGULAR,
    FIT_TOO_FEW_BINS,
    N_PARAMS,
    PARAM_NAMES,
)
from processors.frame_record import FIT_STATUS_NAMES as STATUS_NAMES

# The status codes and parameter order are defined once, in processors.frame_record, and
# re-exported here as part of the fitter's API.
__all__ = [
    "FIT_NO_PEAK", "FIT_NOT_CONVERGED", "FIT_OK", "FIT_OUTSIDE_WINDOW", "FIT_SINGULAR", "FIT_TOO_FEW_BINS",
    "N_PARAMS", "PARAM_NAMES", "STATUS_NAMES",
    "fit_gaussian2d", "fit_gaussian2d_into", "fit_work_size", "make_fit_work",
]

#: ``fit_gaussian2d_into(sums, counts, q_centers, chi_centers, out_params, out_errors, work,
#: min_bins, min_snr, max_iterations, pixel_q, pixel_chi, outlier_sigma, integrated) -> int``:
#: the numba kernel, no validation and no allocation (see ``fit_gaussian2d`` for the
#: arguments). Callable from ``@njit`` code.
fit_gaussian2d_into = _kernel.fit_gaussian2d_kernel

# Relative tolerance on the spacing of bin centres: they come from arange arithmetic.
_REGULAR_RTOL = 1e-6
#: Default threshold of the outlier rule, in Poisson standard deviations ([fit] outlier_sigma).
OUTLIER_SIGMA = 7.0


def fit_work_size(nq: int, nchi: int) -> int:
    """Number of float64 elements of the work buffer for an ``nq × nchi`` patch."""
    return int(_kernel.work_size(int(nq), int(nchi)))


def make_fit_work(nq: int, nchi: int) -> np.ndarray:
    """Work buffer (float64, 1-D) for ``nq × nchi`` patches: allocate once, reuse per frame.

    One buffer per thread: the kernel overwrites it on every call.
    """
    if int(nq) < 2 or int(nchi) < 2:
        raise ValueError(f"nq and nchi must be at least 2, got nq={nq}, nchi={nchi}")
    return np.empty(fit_work_size(nq, nchi), dtype=np.float64)


def _check_array(name: str, a: object, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float64:
        raise ValueError(f"{name} must be float64, got {a.dtype} (use .astype(np.float64))")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    return a


def _check_centres(name: str, a: object, n: int, axis: str) -> None:
    _check_array(name, a, 1)
    if a.size != n:
        raise ValueError(f"{name} has {a.size} values but sums has {n} {axis} bins")
    if n < 2:
        raise ValueError(f"{name} needs at least 2 bins, got {n}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    step = np.diff(a)
    if not np.all(step > 0):
        raise ValueError(f"{name} must be strictly increasing")
    if np.ptp(step) > _REGULAR_RTOL * step.mean() * max(n, 10):
        raise ValueError(f"{name} must be regularly spaced")


def fit_gaussian2d(sums: np.ndarray, counts: np.ndarray, q_centers: np.ndarray,
                   chi_centers: np.ndarray, *, min_bins: int = 30, min_snr: float = 5.0,
                   max_iterations: int = 60, pixel_size: tuple[float, float] | None = None,
                   outlier_sigma: float = OUTLIER_SIGMA, bin_integrated: bool = True,
                   work: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Fit one spot; returns ``(params[8], errors[8], status)``.

    sums, counts : float64 [nq, nchi], C-contiguous
        Summed photon counts and number of valid pixels per bin (0 = empty bin).
    q_centers : float64 [nq], 1/Å, increasing and regular.
    chi_centers : float64 [nchi], degrees, increasing and regular, in the window's branch
        (may lie outside (−180°, 180°], e.g. 150..210).
    min_bins : fewer non-empty bins than ``max(min_bins, 9)`` → FIT_TOO_FEW_BINS.
    min_snr : significance threshold of the spot → FIT_NO_PEAK (see module docstring).
    max_iterations : model evaluations allowed per fitting round → FIT_NOT_CONVERGED.
    pixel_size : (q in 1/Å, χ in degrees) extent of one detector pixel in this window
        (``PolarWindow.pixel_q``, ``pixel_chi``); a FWHM below half of it is unresolved.
        None: half a bin on each axis (the default binning of two pixels per bin).
    outlier_sigma : threshold of the outlier rule in Poisson standard deviations; 0 off.
    bin_integrated : average the Gaussian over each bin (True) or sample it at the centre.
    work : float64 [≥ fit_work_size(nq, nchi)] from ``make_fit_work``; allocated if None.

    params are (A, q0, dq, phi0, dphi, B, Bq, Bchi) (``PARAM_NAMES``), errors their
    standard errors;
    both all NaN unless status is FIT_OK.
    """
    _check_array("sums", sums, 2)
    _check_array("counts", counts, 2)
    if counts.shape != sums.shape:
        raise ValueError(f"counts has shape {counts.shape} but sums has {sums.shape}")
    nq, nchi = sums.shape
    _check_centres("q_centers", q_centers, nq, "q")
    _check_centres("chi_centers", chi_centers, nchi, "chi")
    if isinstance(min_bins, (bool, np.bool_)) or not isinstance(min_bins, (int, np.integer)) \
            or min_bins < 0:
        raise ValueError(f"min_bins must be a non-negative int, got {min_bins!r}")
    if not isinstance(min_snr, (int, float, np.floating, np.integer)) \
            or not np.isfinite(min_snr) or min_snr < 0:
        raise ValueError(f"min_snr must be a finite number >= 0, got {min_snr!r}")
    if isinstance(max_iterations, (bool, np.bool_)) \
            or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    if pixel_size is None:
        pixel_size = (0.5 * (q_centers[1] - q_centers[0]), 0.5 * (chi_centers[1] - chi_centers[0]))
    if len(pixel_size) != 2 or not all(isinstance(v, (int, float, np.floating, np.integer))
                                       and np.isfinite(v) and v > 0 for v in pixel_size):
        raise ValueError(f"pixel_size must be two finite numbers > 0 (1/Å, degrees), got {pixel_size!r}")
    if not isinstance(outlier_sigma, (int, float, np.floating, np.integer)) \
            or not np.isfinite(outlier_sigma) or outlier_sigma < 0:
        raise ValueError(f"outlier_sigma must be a finite number >= 0, got {outlier_sigma!r}")
    if work is None:
        work = make_fit_work(nq, nchi)
    else:
        _check_array("work", work, 1)
        need = fit_work_size(nq, nchi)
        if work.size < need:
            raise ValueError(f"work has {work.size} elements, needs {need} for a {nq} x {nchi}"
                             " patch (use make_fit_work)")
        if not work.flags.writeable:
            raise ValueError("work must be writeable")
    params = np.empty(N_PARAMS, dtype=np.float64)
    errors = np.empty(N_PARAMS, dtype=np.float64)
    status = fit_gaussian2d_into(sums, counts, q_centers, chi_centers, params, errors, work,
                                 int(min_bins), float(min_snr), int(max_iterations),
                                 float(pixel_size[0]), float(pixel_size[1]), float(outlier_sigma),
                                 bool(bin_integrated))
    return params, errors, int(status)
