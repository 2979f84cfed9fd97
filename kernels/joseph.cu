// Joseph forward and matched back projection for pettk's CUDA backend (CuPy RawModule, NVRTC):
// non-TOF (2D and 3D), TOF sinograms and TOF list mode, one thread per LOR.
//
// The method is the one defined in pettk/projector.py; these kernels compute exactly what the
// numba kernels in pettk/backends/_joseph_cpu.py compute, in the same order of operations (the
// module is compiled with --fmad=false, so no multiply-add is contracted and the double geometry
// is bit for bit the CPU's):
//
// * the stepping axis k has the largest |p1_k - p0_k| (mm); every voxel plane 0 <= i < n_k whose
//   centre lies between p0 and p1 is sampled by bilinear (3D) or linear (2D) interpolation in the
//   other axes; voxels outside the grid count as zero (the CPU pads the image with zeros, these
//   kernels test the bounds: same values);
// * the line integral is the sum of the samples times voxel_size_k * |p1 - p0| / |p1_k - p0_k|;
// * each LOR's plane range is clipped to the planes whose interpolation coordinates lie in
//   (-1, n) (with a rounding margin), as in _clip_range;
// * the back projections spread exactly the same weights, with atomicAdd;
// * TOF: tc + i * ts is the signed distance (mm) of plane i's sample from the LOR midpoint; a
//   sample at t adds to the bins from the one containing t - reach to the one containing
//   t + reach the Gaussian integral 0.5 * (erf((e_hi - t) / (sqrt2 sigma)) - erf((e_lo - t) /
//   (sqrt2 sigma))). The TOF parameter vector is the CPU plan's:
//   tof = (first_edge_mm, bin_width_mm, sigma_mm, reach_mm, 1 / bin_width_mm, 1 / (sqrt2 sigma)).
//
// LORs come as factorised tables (pettk.geometry.LORTables): transaxial rows (x0, y0, x1, y1),
// axial rows (z0, z1); with outer != 0, LOR l uses axial row l / n_t and transaxial row l % n_t
// (sinograms: consecutive threads are neighbouring radial bins of one view in one plane, so the
// samples of a warp at one plane index hit neighbouring voxels), otherwise row l of both (list
// mode). Images are C-order (n0, n1[, n2]) arrays, read through the read-only data cache (__ldg)
// in the forward kernels. Geometry arithmetic is double; samples accumulate in double.
//
// TOF sinogram kernels keep each thread's row of TOF bins in dynamic shared memory, laid out
// [bin][thread] (conflict-free): the launch passes a chunk of bins [bin0, bin0 + n_chunk) and
// blockDim.x * n_chunk * sizeof(T) bytes of shared memory; the host splits the bins into several
// launches only when one row does not fit (see pettk/backends/cuda.py, tof_launch_config).
//
// The extern "C" names at the end are the entry points, with a _f32 / _f64 suffix for the image
// dtype.

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------
__device__ inline float pettk_atomic_add(float *address, float value)
{
    return atomicAdd(address, value);
}

__device__ inline double pettk_atomic_add(double *address, double value)
{
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ < 600 || defined(PETTK_CAS_ATOMICS))
    // no native double atomicAdd before sm_60: compare-and-swap loop (PETTK_CAS_ATOMICS forces
    // it, so that the tests compile this path with a current compiler)
    unsigned long long *word = (unsigned long long *)address;
    unsigned long long old = *word, assumed;
    do {
        assumed = old;
        old = atomicCAS(word, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
    } while (assumed != old);
    return __longlong_as_double(old);
#else
    return atomicAdd(address, value);
#endif
}

__device__ inline long long pettk_thread_index()
{
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

// v0, v1 or v2 by axis number (keeps the per-axis values in registers, no local arrays)
__device__ inline double pick3(int axis, double v0, double v1, double v2)
{
    return axis == 0 ? v0 : (axis == 1 ? v1 : v2);
}

__device__ inline long long pick3ll(int axis, long long v0, long long v1, long long v2)
{
    return axis == 0 ? v0 : (axis == 1 ? v1 : v2);
}

struct Setup {
    int k, a, b;      // stepping axis and the two interpolation axes (b unused in 2D)
    long long lo, hi; // plane range, empty when lo > hi
    double ca, sa;    // interpolation coordinate along a: ca + i * sa (voxel units)
    double cb, sb;    // ... along b
    double weight;    // voxel_size_k * |d| / |d_k|
    double tc, ts;    // signed distance (mm) of plane i's sample from the midpoint: tc + i * ts
};

// _clip_range: clip [lo, hi] to the planes i where c + s * i lies in (-1, n)
__device__ inline void clip_range(long long &lo, long long &hi, double c, double s, int n)
{
    if (s == 0.0) {
        if (c <= -1.0 || c >= (double)n) { lo = 1; hi = 0; }
        return;
    }
    double t0 = (-1.0 - c) / s;
    double t1 = ((double)n - c) / s;
    if (t0 > t1) { double t = t0; t0 = t1; t1 = t; }
    double eps = 1e-9 * (fabs(t0) + fabs(t1) + 1.0);
    // clamp before converting: a double outside the long long range converts to garbage
    double lo_f = (double)lo - 1.0, hi_f = (double)hi + 1.0;
    long long lo2 = (long long)ceil(fmin(fmax(t0 - eps, lo_f), hi_f));
    long long hi2 = (long long)floor(fmin(fmax(t1 + eps, lo_f), hi_f));
    if (lo2 > lo) lo = lo2;
    if (hi2 < hi) hi = hi2;
}

// the plane range along axis k before clipping: planes between u0k and u1k, inside [0, n_k)
__device__ inline void plane_range(double u0k, double u1k, int n_k, long long &lo, long long &hi)
{
    double n = (double)n_k;
    long long l = (long long)ceil(fmin(fmax(fmin(u0k, u1k), -1.0), n));
    long long h = (long long)floor(fmin(fmax(fmax(u0k, u1k), -1.0), n));
    lo = l > 0 ? l : 0;
    hi = h < n_k - 1 ? h : n_k - 1;
}

// _setup3d
__device__ inline Setup setup3d(const int *__restrict__ shape, const double *__restrict__ origin,
                                const double *__restrict__ vs, double x0, double y0, double z0,
                                double x1, double y1, double z1)
{
    Setup s;
    double dx = x1 - x0, dy = y1 - y0, dz = z1 - z0;
    double ax = fabs(dx), ay = fabs(dy), az = fabs(dz);
    if (ax >= ay && ax >= az) { s.k = 0; s.a = 1; s.b = 2; }
    else if (ay >= az)        { s.k = 1; s.a = 0; s.b = 2; }
    else                      { s.k = 2; s.a = 0; s.b = 1; }
    s.lo = 1; s.hi = 0;
    s.ca = s.sa = s.cb = s.sb = s.weight = s.tc = s.ts = 0.0;
    double dk = pick3(s.k, dx, dy, dz);
    if (dk == 0.0) return s;
    double da = pick3(s.a, dx, dy, dz), db = pick3(s.b, dx, dy, dz);
    double vk = __ldg(vs + s.k), va = __ldg(vs + s.a), vb = __ldg(vs + s.b);
    // continuous voxel indices of p0 and the per-mm slopes
    double u0k = (pick3(s.k, x0, y0, z0) - __ldg(origin + s.k)) / vk;
    double u1k = u0k + dk / vk;
    double duk = dk / vk;
    double u0a = (pick3(s.a, x0, y0, z0) - __ldg(origin + s.a)) / va;
    double u0b = (pick3(s.b, x0, y0, z0) - __ldg(origin + s.b)) / vb;
    s.sa = (da / va) / duk;
    s.sb = (db / vb) / duk;
    s.ca = u0a - u0k * s.sa;
    s.cb = u0b - u0k * s.sb;
    plane_range(u0k, u1k, __ldg(shape + s.k), s.lo, s.hi);
    clip_range(s.lo, s.hi, s.ca, s.sa, __ldg(shape + s.a));
    clip_range(s.lo, s.hi, s.cb, s.sb, __ldg(shape + s.b));
    double length = sqrt(dx * dx + dy * dy + dz * dz);
    s.weight = vk * length / fabs(dk);
    s.ts = length / duk;
    s.tc = -u0k * s.ts - 0.5 * length;
    return s;
}

// _setup2d
__device__ inline Setup setup2d(const int *__restrict__ shape, const double *__restrict__ origin,
                                const double *__restrict__ vs, double x0, double y0, double x1,
                                double y1)
{
    Setup s;
    double dx = x1 - x0, dy = y1 - y0;
    if (fabs(dx) >= fabs(dy)) { s.k = 0; s.a = 1; } else { s.k = 1; s.a = 0; }
    s.b = 0;
    s.lo = 1; s.hi = 0;
    s.ca = s.sa = s.cb = s.sb = s.weight = s.tc = s.ts = 0.0;
    double dk = s.k == 0 ? dx : dy;
    if (dk == 0.0) return s;
    double da = s.k == 0 ? dy : dx;
    double vk = __ldg(vs + s.k), va = __ldg(vs + s.a);
    double u0k = ((s.k == 0 ? x0 : y0) - __ldg(origin + s.k)) / vk;
    double duk = dk / vk;
    double u1k = u0k + duk;
    double u0a = ((s.k == 0 ? y0 : x0) - __ldg(origin + s.a)) / va;
    s.sa = (da / va) / duk;
    s.ca = u0a - u0k * s.sa;
    plane_range(u0k, u1k, __ldg(shape + s.k), s.lo, s.hi);
    clip_range(s.lo, s.hi, s.ca, s.sa, __ldg(shape + s.a));
    s.weight = vk * sqrt(dx * dx + dy * dy) / fabs(dk);
    return s;
}

// _endpoints: LOR number -> (x0, y0, z0, x1, y1, z1) from the factorised tables
__device__ inline void endpoints3d(const double *__restrict__ trans, const double *__restrict__ axial,
                                   int outer, long long n_t, long long lor, double &x0, double &y0,
                                   double &z0, double &x1, double &y1, double &z1)
{
    long long ia = outer ? lor / n_t : lor;
    long long it = outer ? lor - ia * n_t : lor;
    x0 = __ldg(trans + 4 * it + 0);
    y0 = __ldg(trans + 4 * it + 1);
    x1 = __ldg(trans + 4 * it + 2);
    y1 = __ldg(trans + 4 * it + 3);
    z0 = __ldg(axial + 2 * ia + 0);
    z1 = __ldg(axial + 2 * ia + 1);
}

// Element strides of the C-order image along the stepping and interpolation axes, and the
// sizes of the interpolation axes.
struct Walk3 {
    long long sk, s_a, s_b;
    int na, nb;
};

__device__ inline Walk3 walk3(const int *__restrict__ shape, const Setup &s)
{
    int n0 = __ldg(shape + 0), n1 = __ldg(shape + 1), n2 = __ldg(shape + 2);
    long long st0 = (long long)n1 * n2, st1 = (long long)n2;
    Walk3 w;
    w.sk = pick3ll(s.k, st0, st1, 1);
    w.s_a = pick3ll(s.a, st0, st1, 1);
    w.s_b = pick3ll(s.b, st0, st1, 1);
    w.na = (int)pick3ll(s.a, n0, n1, n2);
    w.nb = (int)pick3ll(s.b, n0, n1, n2);
    return w;
}

// _corner3d: the lower interpolation corner at plane i and the two weights
struct Corner {
    long long base; // flat index of voxel (i, ia, ib) in (k, a, b) axes; may lie outside the grid
    int ia, ib;
    double wa, wb;
};

__device__ inline Corner corner3d(const Setup &s, const Walk3 &w, long long i)
{
    Corner c;
    double fa = s.ca + (double)i * s.sa;
    double fb = s.cb + (double)i * s.sb;
    double fla = floor(fa), flb = floor(fb);
    c.ia = (int)fla;
    c.ib = (int)flb;
    c.wa = fa - fla;
    c.wb = fb - flb;
    c.base = i * w.sk + (long long)c.ia * w.s_a + (long long)c.ib * w.s_b;
    return c;
}

// _bilinear: voxels outside the grid read as zero
template <typename T>
__device__ inline double bilinear(const T *__restrict__ img, const Walk3 &w, const Corner &c)
{
    bool a0 = c.ia >= 0 && c.ia < w.na, a1 = c.ia + 1 >= 0 && c.ia + 1 < w.na;
    bool b0 = c.ib >= 0 && c.ib < w.nb, b1 = c.ib + 1 >= 0 && c.ib + 1 < w.nb;
    double v00 = (a0 && b0) ? (double)__ldg(img + c.base) : 0.0;
    double v01 = (a0 && b1) ? (double)__ldg(img + c.base + w.s_b) : 0.0;
    double v10 = (a1 && b0) ? (double)__ldg(img + c.base + w.s_a) : 0.0;
    double v11 = (a1 && b1) ? (double)__ldg(img + c.base + w.s_a + w.s_b) : 0.0;
    return (1.0 - c.wa) * ((1.0 - c.wb) * v00 + c.wb * v01) + c.wa * ((1.0 - c.wb) * v10 + c.wb * v11);
}

// _spread_bilinear: the adjoint of bilinear(), voxels outside the grid are skipped
template <typename T>
__device__ inline void spread_bilinear(T *img, const Walk3 &w, const Corner &c, double value)
{
    bool a0 = c.ia >= 0 && c.ia < w.na, a1 = c.ia + 1 >= 0 && c.ia + 1 < w.na;
    bool b0 = c.ib >= 0 && c.ib < w.nb, b1 = c.ib + 1 >= 0 && c.ib + 1 < w.nb;
    double va = value * (1.0 - c.wa);
    double vb = value * c.wa;
    if (a0 && b0) pettk_atomic_add(img + c.base, (T)(va * (1.0 - c.wb)));
    if (a0 && b1) pettk_atomic_add(img + c.base + w.s_b, (T)(va * c.wb));
    if (a1 && b0) pettk_atomic_add(img + c.base + w.s_a, (T)(vb * (1.0 - c.wb)));
    if (a1 && b1) pettk_atomic_add(img + c.base + w.s_a + w.s_b, (T)(vb * c.wb));
}

// TOF parameters in registers
struct Tof {
    double first, width, reach, inv_width, inv;
    int n_bins;
};

__device__ inline Tof load_tof(const double *__restrict__ tof, int n_bins)
{
    Tof p;
    p.first = __ldg(tof + 0);
    p.width = __ldg(tof + 1);
    p.reach = __ldg(tof + 3);
    p.inv_width = __ldg(tof + 4);
    p.inv = __ldg(tof + 5);
    p.n_bins = n_bins;
    return p;
}

// _tof_window: the bins a sample at t reaches, clamped to [0, n_bins)
__device__ inline void tof_window(const Tof &p, double t, long long &b_lo, long long &b_hi)
{
    long long lo = (long long)floor((t - p.reach - p.first) * p.inv_width);
    long long hi = (long long)floor((t + p.reach - p.first) * p.inv_width);
    b_lo = lo > 0 ? lo : 0;
    b_hi = hi < p.n_bins - 1 ? hi : p.n_bins - 1;
}

// erf of the scaled distance of bin edge `edge` (number) from t
__device__ inline double edge_cdf(const Tof &p, long long edge, double t)
{
    return erf((p.first + (double)edge * p.width - t) * p.inv);
}

// ------------------------------------------------------------------------------------------
// Non-TOF 3D
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void joseph3d_fwd(const T *__restrict__ img, T *__restrict__ out, const int *__restrict__ shape,
                             const double *__restrict__ origin, const double *__restrict__ vs,
                             const double *__restrict__ trans, const double *__restrict__ axial, int outer,
                             long long n_t, long long n_lors)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, outer, n_t, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    Walk3 w = walk3(shape, s);
    double acc = 0.0;
    for (long long i = s.lo; i <= s.hi; ++i) acc += bilinear(img, w, corner3d(s, w, i));
    out[lor] = (T)(acc * s.weight);
}

template <typename T>
__device__ void joseph3d_adj(const T *__restrict__ y, T *img, const int *__restrict__ shape,
                             const double *__restrict__ origin, const double *__restrict__ vs,
                             const double *__restrict__ trans, const double *__restrict__ axial, int outer,
                             long long n_t, long long n_lors)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    double value = (double)y[lor];
    if (value == 0.0) return;
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, outer, n_t, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    double v = value * s.weight;
    if (v == 0.0) return;
    Walk3 w = walk3(shape, s);
    for (long long i = s.lo; i <= s.hi; ++i) spread_bilinear(img, w, corner3d(s, w, i), v);
}

// ------------------------------------------------------------------------------------------
// Non-TOF 2D (transaxial rows only)
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void joseph2d_fwd(const T *__restrict__ img, T *__restrict__ out, const int *__restrict__ shape,
                             const double *__restrict__ origin, const double *__restrict__ vs,
                             const double *__restrict__ trans, long long n_lors)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    Setup s = setup2d(shape, origin, vs, __ldg(trans + 4 * lor + 0), __ldg(trans + 4 * lor + 1),
                      __ldg(trans + 4 * lor + 2), __ldg(trans + 4 * lor + 3));
    long long sk = s.k == 0 ? (long long)__ldg(shape + 1) : 1;
    long long s_a = s.a == 0 ? (long long)__ldg(shape + 1) : 1;
    int na = __ldg(shape + s.a);
    double acc = 0.0;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + (double)i * s.sa;
        double fla = floor(fa);
        int ia = (int)fla;
        double wa = fa - fla;
        long long base = i * sk + (long long)ia * s_a;
        double v0 = (ia >= 0 && ia < na) ? (double)__ldg(img + base) : 0.0;
        double v1 = (ia + 1 >= 0 && ia + 1 < na) ? (double)__ldg(img + base + s_a) : 0.0;
        acc += (1.0 - wa) * v0 + wa * v1;
    }
    out[lor] = (T)(acc * s.weight);
}

template <typename T>
__device__ void joseph2d_adj(const T *__restrict__ y, T *img, const int *__restrict__ shape,
                             const double *__restrict__ origin, const double *__restrict__ vs,
                             const double *__restrict__ trans, long long n_lors)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    double value = (double)y[lor];
    if (value == 0.0) return;
    Setup s = setup2d(shape, origin, vs, __ldg(trans + 4 * lor + 0), __ldg(trans + 4 * lor + 1),
                      __ldg(trans + 4 * lor + 2), __ldg(trans + 4 * lor + 3));
    double v = value * s.weight;
    if (v == 0.0) return;
    long long sk = s.k == 0 ? (long long)__ldg(shape + 1) : 1;
    long long s_a = s.a == 0 ? (long long)__ldg(shape + 1) : 1;
    int na = __ldg(shape + s.a);
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + (double)i * s.sa;
        double fla = floor(fa);
        int ia = (int)fla;
        double wa = fa - fla;
        long long base = i * sk + (long long)ia * s_a;
        if (ia >= 0 && ia < na) pettk_atomic_add(img + base, (T)(v * (1.0 - wa)));
        if (ia + 1 >= 0 && ia + 1 < na) pettk_atomic_add(img + base + s_a, (T)(v * wa));
    }
}

// ------------------------------------------------------------------------------------------
// TOF sinograms (3D kernels; 2D problems arrive with a singleton z axis). out / y are
// (n_lors, n_bins) C-order; each launch handles the bins [bin0, bin0 + n_chunk).
// ------------------------------------------------------------------------------------------
extern __shared__ __align__(16) unsigned char pettk_tof_rows[];

template <typename T>
__device__ void joseph3d_tof_fwd(const T *__restrict__ img, T *__restrict__ out, const int *__restrict__ shape,
                                 const double *__restrict__ origin, const double *__restrict__ vs,
                                 const double *__restrict__ trans, const double *__restrict__ axial, int outer,
                                 long long n_t, long long n_lors, const double *__restrict__ tof, int n_bins,
                                 int bin0, int n_chunk)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    // this thread's accumulators: row[c * blockDim.x] for bin bin0 + c, in the image dtype
    // like the CPU's output row
    T *row = reinterpret_cast<T *>(pettk_tof_rows) + threadIdx.x;
    const int pitch = blockDim.x;
    for (int c = 0; c < n_chunk; ++c) row[c * pitch] = (T)0;
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, outer, n_t, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    Walk3 w = walk3(shape, s);
    Tof p = load_tof(tof, n_bins);
    const long long last = (long long)bin0 + n_chunk - 1;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double v = bilinear(img, w, corner3d(s, w, i));
        if (v == 0.0) continue;
        double t = s.tc + (double)i * s.ts;
        long long b_lo, b_hi;
        tof_window(p, t, b_lo, b_hi);
        if (b_lo < bin0) b_lo = bin0;
        if (b_hi > last) b_hi = last;
        if (b_lo > b_hi) continue;
        // edges b_lo .. b_hi + 1; bin b gets the difference of the cdf at its two edges
        double cdf_lo = 0.0;
        for (long long e = b_lo; e <= b_hi + 1; ++e) {
            double cdf_hi = edge_cdf(p, e, t);
            if (e > b_lo) {
                T &slot = row[(e - 1 - bin0) * pitch];
                slot = (T)((double)slot + 0.5 * v * (cdf_hi - cdf_lo));
            }
            cdf_lo = cdf_hi;
        }
    }
    T *dst = out + lor * n_bins + bin0;
    for (int c = 0; c < n_chunk; ++c) dst[c] = (T)((double)row[c * pitch] * s.weight);
}

template <typename T>
__device__ void joseph3d_tof_adj(const T *__restrict__ y, T *img, const int *__restrict__ shape,
                                 const double *__restrict__ origin, const double *__restrict__ vs,
                                 const double *__restrict__ trans, const double *__restrict__ axial, int outer,
                                 long long n_t, long long n_lors, const double *__restrict__ tof, int n_bins,
                                 int bin0, int n_chunk)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    // this thread's chunk of its TOF row, staged in shared memory
    T *row = reinterpret_cast<T *>(pettk_tof_rows) + threadIdx.x;
    const int pitch = blockDim.x;
    const T *src = y + lor * n_bins + bin0;
    bool nonzero = false;
    for (int c = 0; c < n_chunk; ++c) {
        T value = __ldg(src + c);
        row[c * pitch] = value;
        nonzero = nonzero || value != (T)0;
    }
    if (!nonzero) return; // measured TOF sinograms are sparse: skip empty LORs
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, outer, n_t, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    Walk3 w = walk3(shape, s);
    Tof p = load_tof(tof, n_bins);
    const long long last = (long long)bin0 + n_chunk - 1;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double t = s.tc + (double)i * s.ts;
        long long b_lo, b_hi;
        tof_window(p, t, b_lo, b_hi);
        if (b_lo < bin0) b_lo = bin0;
        if (b_hi > last) b_hi = last;
        if (b_lo > b_hi) continue;
        double g = 0.0;
        double cdf_lo = 0.0;
        for (long long e = b_lo; e <= b_hi + 1; ++e) {
            double cdf_hi = edge_cdf(p, e, t);
            if (e > b_lo) g += (double)row[(e - 1 - bin0) * pitch] * (cdf_hi - cdf_lo);
            cdf_lo = cdf_hi;
        }
        g *= 0.5 * s.weight;
        if (g == 0.0) continue;
        spread_bilinear(img, w, corner3d(s, w, i), g);
    }
}

// ------------------------------------------------------------------------------------------
// TOF list mode: event l is LOR l of the zipped tables, projected into its own bin tof_bin[l]
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void joseph3d_lm_tof_fwd(const T *__restrict__ img, T *__restrict__ out, const int *__restrict__ shape,
                                    const double *__restrict__ origin, const double *__restrict__ vs,
                                    const double *__restrict__ trans, const double *__restrict__ axial,
                                    long long n_lors, const double *__restrict__ tof, int n_bins,
                                    const long long *__restrict__ tof_bin)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, 0, 1, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    Walk3 w = walk3(shape, s);
    Tof p = load_tof(tof, n_bins);
    long long bin = __ldg(tof_bin + lor);
    double e_lo = p.first + (double)bin * p.width;
    double e_hi = e_lo + p.width;
    double acc = 0.0;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double t = s.tc + (double)i * s.ts;
        long long b_lo, b_hi;
        tof_window(p, t, b_lo, b_hi);
        if (bin < b_lo || bin > b_hi) continue;
        double w_tof = 0.5 * (erf((e_hi - t) * p.inv) - erf((e_lo - t) * p.inv));
        acc += w_tof * bilinear(img, w, corner3d(s, w, i));
    }
    out[lor] = (T)(acc * s.weight);
}

template <typename T>
__device__ void joseph3d_lm_tof_adj(const T *__restrict__ y, T *img, const int *__restrict__ shape,
                                    const double *__restrict__ origin, const double *__restrict__ vs,
                                    const double *__restrict__ trans, const double *__restrict__ axial,
                                    long long n_lors, const double *__restrict__ tof, int n_bins,
                                    const long long *__restrict__ tof_bin)
{
    long long lor = pettk_thread_index();
    if (lor >= n_lors) return;
    double value = (double)y[lor];
    if (value == 0.0) return;
    double x0, y0, z0, x1, y1, z1;
    endpoints3d(trans, axial, 0, 1, lor, x0, y0, z0, x1, y1, z1);
    Setup s = setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1);
    Walk3 w = walk3(shape, s);
    Tof p = load_tof(tof, n_bins);
    long long bin = __ldg(tof_bin + lor);
    double e_lo = p.first + (double)bin * p.width;
    double e_hi = e_lo + p.width;
    double vw = value * s.weight;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double t = s.tc + (double)i * s.ts;
        long long b_lo, b_hi;
        tof_window(p, t, b_lo, b_hi);
        if (bin < b_lo || bin > b_hi) continue;
        double w_tof = 0.5 * (erf((e_hi - t) * p.inv) - erf((e_lo - t) * p.inv));
        spread_bilinear(img, w, corner3d(s, w, i), vw * w_tof);
    }
}

// ------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------
#define PETTK_GEOMETRY_PARAMS                                                                   \
    const int *__restrict__ shape, const double *__restrict__ origin, const double *__restrict__ vs, \
        const double *__restrict__ trans
#define PETTK_GEOMETRY_ARGS shape, origin, vs, trans

#define PETTK_JOSEPH_ENTRIES(T, SUFFIX)                                                          \
    extern "C" __global__ void joseph3d_fwd_##SUFFIX(                                            \
        const T *__restrict__ img, T *__restrict__ out, PETTK_GEOMETRY_PARAMS,                  \
        const double *__restrict__ axial, int outer, long long n_t, long long n_lors)           \
    {                                                                                            \
        joseph3d_fwd<T>(img, out, PETTK_GEOMETRY_ARGS, axial, outer, n_t, n_lors);              \
    }                                                                                            \
    extern "C" __global__ void joseph3d_adj_##SUFFIX(                                            \
        const T *__restrict__ y, T *img, PETTK_GEOMETRY_PARAMS, const double *__restrict__ axial, \
        int outer, long long n_t, long long n_lors)                                              \
    {                                                                                            \
        joseph3d_adj<T>(y, img, PETTK_GEOMETRY_ARGS, axial, outer, n_t, n_lors);                \
    }                                                                                            \
    extern "C" __global__ void joseph2d_fwd_##SUFFIX(                                            \
        const T *__restrict__ img, T *__restrict__ out, PETTK_GEOMETRY_PARAMS, long long n_lors) \
    {                                                                                            \
        joseph2d_fwd<T>(img, out, PETTK_GEOMETRY_ARGS, n_lors);                                 \
    }                                                                                            \
    extern "C" __global__ void joseph2d_adj_##SUFFIX(                                            \
        const T *__restrict__ y, T *img, PETTK_GEOMETRY_PARAMS, long long n_lors)               \
    {                                                                                            \
        joseph2d_adj<T>(y, img, PETTK_GEOMETRY_ARGS, n_lors);                                   \
    }                                                                                            \
    extern "C" __global__ void joseph3d_tof_fwd_##SUFFIX(                                        \
        const T *__restrict__ img, T *__restrict__ out, PETTK_GEOMETRY_PARAMS,                  \
        const double *__restrict__ axial, int outer, long long n_t, long long n_lors,           \
        const double *__restrict__ tof, int n_bins, int bin0, int n_chunk)                      \
    {                                                                                            \
        joseph3d_tof_fwd<T>(img, out, PETTK_GEOMETRY_ARGS, axial, outer, n_t, n_lors, tof, n_bins, \
                            bin0, n_chunk);                                                      \
    }                                                                                            \
    extern "C" __global__ void joseph3d_tof_adj_##SUFFIX(                                        \
        const T *__restrict__ y, T *img, PETTK_GEOMETRY_PARAMS, const double *__restrict__ axial, \
        int outer, long long n_t, long long n_lors, const double *__restrict__ tof, int n_bins, \
        int bin0, int n_chunk)                                                                   \
    {                                                                                            \
        joseph3d_tof_adj<T>(y, img, PETTK_GEOMETRY_ARGS, axial, outer, n_t, n_lors, tof, n_bins, \
                            bin0, n_chunk);                                                      \
    }                                                                                            \
    extern "C" __global__ void joseph3d_lm_tof_fwd_##SUFFIX(                                     \
        const T *__restrict__ img, T *__restrict__ out, PETTK_GEOMETRY_PARAMS,                  \
        const double *__restrict__ axial, long long n_lors, const double *__restrict__ tof,     \
        int n_bins, const long long *__restrict__ tof_bin)                                      \
    {                                                                                            \
        joseph3d_lm_tof_fwd<T>(img, out, PETTK_GEOMETRY_ARGS, axial, n_lors, tof, n_bins, tof_bin); \
    }                                                                                            \
    extern "C" __global__ void joseph3d_lm_tof_adj_##SUFFIX(                                     \
        const T *__restrict__ y, T *img, PETTK_GEOMETRY_PARAMS, const double *__restrict__ axial, \
        long long n_lors, const double *__restrict__ tof, int n_bins,                           \
        const long long *__restrict__ tof_bin)                                                  \
    {                                                                                            \
        joseph3d_lm_tof_adj<T>(y, img, PETTK_GEOMETRY_ARGS, axial, n_lors, tof, n_bins, tof_bin); \
    }

PETTK_JOSEPH_ENTRIES(float, f32)
PETTK_JOSEPH_ENTRIES(double, f64)
