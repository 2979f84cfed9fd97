// Joseph forward and matched back projection (non-TOF), one thread per LOR.
//
// The method is the one defined in pettk/projector.py and implemented for the CPU in
// pettk/backends/_joseph_cpu.py: the stepping axis k has the largest |p1_k - p0_k| (mm); every
// voxel plane 0 <= i < n_k whose centre lies between p0 and p1 is sampled by bilinear (3D) or
// linear (2D) interpolation in the other axes, voxels outside the grid count as zero, and the sum
// is weighted by voxel_size_k * |p1 - p0| / |p1_k - p0_k|. The back projection adds exactly the
// same weights with atomicAdd.
//
// LORs come as factorised tables (pettk.geometry.LORTables): transaxial rows (x0, y0, x1, y1),
// axial rows (z0, z1); with outer != 0, LOR l uses axial row l / n_t and transaxial row l % n_t
// (sinograms), otherwise row l of both (list mode). Images are C-order (n0, n1[, n2]) arrays.
// Geometry arithmetic is double; samples accumulate in double.
//
// Compiled at run time by CuPy's RawModule (NVRTC); the extern "C" names below are the entry
// points, with a _f32 / _f64 suffix for the image dtype.

struct Setup {
    int k, a, b;      // stepping axis and the two interpolation axes (b unused in 2D)
    long long lo, hi; // plane range, empty when lo > hi
    double ca, sa;    // interpolation coordinate along a: ca + i * sa (voxel units)
    double cb, sb;    // ... along b
    double weight;    // voxel_size_k * |d| / |d_k|
};

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

__device__ inline Setup setup3d(const int *shape, const double *origin, const double *vs,
                                const double p0[3], const double p1[3])
{
    Setup s;
    double d[3] = {p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]};
    double ax = fabs(d[0]), ay = fabs(d[1]), az = fabs(d[2]);
    if (ax >= ay && ax >= az) { s.k = 0; s.a = 1; s.b = 2; }
    else if (ay >= az)        { s.k = 1; s.a = 0; s.b = 2; }
    else                      { s.k = 2; s.a = 0; s.b = 1; }
    s.lo = 1; s.hi = 0; s.ca = s.sa = s.cb = s.sb = s.weight = 0.0;
    double dk = d[s.k];
    if (dk == 0.0) return s;
    double u0k = (p0[s.k] - origin[s.k]) / vs[s.k];
    double duk = dk / vs[s.k];
    double u1k = u0k + duk;
    s.sa = (d[s.a] / vs[s.a]) / duk;
    s.sb = (d[s.b] / vs[s.b]) / duk;
    s.ca = (p0[s.a] - origin[s.a]) / vs[s.a] - u0k * s.sa;
    s.cb = (p0[s.b] - origin[s.b]) / vs[s.b] - u0k * s.sb;
    double n_k = (double)shape[s.k];
    long long lo = (long long)ceil(fmin(fmax(fmin(u0k, u1k), -1.0), n_k));
    long long hi = (long long)floor(fmin(fmax(fmax(u0k, u1k), -1.0), n_k));
    s.lo = lo > 0 ? lo : 0;
    s.hi = hi < shape[s.k] - 1 ? hi : shape[s.k] - 1;
    clip_range(s.lo, s.hi, s.ca, s.sa, shape[s.a]);
    clip_range(s.lo, s.hi, s.cb, s.sb, shape[s.b]);
    s.weight = vs[s.k] * sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) / fabs(dk);
    return s;
}

__device__ inline Setup setup2d(const int *shape, const double *origin, const double *vs,
                                const double p0[2], const double p1[2])
{
    Setup s;
    double d[2] = {p1[0] - p0[0], p1[1] - p0[1]};
    if (fabs(d[0]) >= fabs(d[1])) { s.k = 0; s.a = 1; } else { s.k = 1; s.a = 0; }
    s.b = 0;
    s.lo = 1; s.hi = 0; s.ca = s.sa = s.cb = s.sb = s.weight = 0.0;
    double dk = d[s.k];
    if (dk == 0.0) return s;
    double u0k = (p0[s.k] - origin[s.k]) / vs[s.k];
    double duk = dk / vs[s.k];
    double u1k = u0k + duk;
    s.sa = (d[s.a] / vs[s.a]) / duk;
    s.ca = (p0[s.a] - origin[s.a]) / vs[s.a] - u0k * s.sa;
    double n_k = (double)shape[s.k];
    long long lo = (long long)ceil(fmin(fmax(fmin(u0k, u1k), -1.0), n_k));
    long long hi = (long long)floor(fmin(fmax(fmax(u0k, u1k), -1.0), n_k));
    s.lo = lo > 0 ? lo : 0;
    s.hi = hi < shape[s.k] - 1 ? hi : shape[s.k] - 1;
    clip_range(s.lo, s.hi, s.ca, s.sa, shape[s.a]);
    s.weight = vs[s.k] * sqrt(d[0] * d[0] + d[1] * d[1]) / fabs(dk);
    return s;
}

__device__ inline void endpoints3d(const double *trans, const double *axial, int outer,
                                   long long n_t, long long lor, double p0[3], double p1[3])
{
    long long ia = outer ? lor / n_t : lor;
    long long it = outer ? lor - ia * n_t : lor;
    p0[0] = trans[4 * it + 0]; p0[1] = trans[4 * it + 1]; p0[2] = axial[2 * ia + 0];
    p1[0] = trans[4 * it + 2]; p1[1] = trans[4 * it + 3]; p1[2] = axial[2 * ia + 1];
}

// ------------------------------------------------------------------------------------------
// 3D
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void joseph3d_fwd(const T *img, T *out, const int *shape, const double *origin,
                             const double *vs, const double *trans, const double *axial,
                             int outer, long long n_t, long long n_lors)
{
    long long lor = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lor >= n_lors) return;
    double p0[3], p1[3];
    endpoints3d(trans, axial, outer, n_t, lor, p0, p1);
    Setup s = setup3d(shape, origin, vs, p0, p1);
    long long stride[3] = {(long long)shape[1] * shape[2], (long long)shape[2], 1};
    long long sk = stride[s.k], sa_ = stride[s.a], sb_ = stride[s.b];
    int na = shape[s.a], nb = shape[s.b];
    double acc = 0.0;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + i * s.sa, fb = s.cb + i * s.sb;
        double fla = floor(fa), flb = floor(fb);
        int ia = (int)fla, ib = (int)flb;
        double wa = fa - fla, wb = fb - flb;
        long long base = i * sk;
        bool a0 = ia >= 0 && ia < na, a1 = ia + 1 >= 0 && ia + 1 < na;
        bool b0 = ib >= 0 && ib < nb, b1 = ib + 1 >= 0 && ib + 1 < nb;
        double v00 = (a0 && b0) ? (double)img[base + ia * sa_ + ib * sb_] : 0.0;
        double v01 = (a0 && b1) ? (double)img[base + ia * sa_ + (ib + 1) * sb_] : 0.0;
        double v10 = (a1 && b0) ? (double)img[base + (ia + 1) * sa_ + ib * sb_] : 0.0;
        double v11 = (a1 && b1) ? (double)img[base + (ia + 1) * sa_ + (ib + 1) * sb_] : 0.0;
        acc += (1.0 - wa) * ((1.0 - wb) * v00 + wb * v01) + wa * ((1.0 - wb) * v10 + wb * v11);
    }
    out[lor] = (T)(acc * s.weight);
}

template <typename T>
__device__ void joseph3d_adj(const T *y, T *img, const int *shape, const double *origin,
                             const double *vs, const double *trans, const double *axial,
                             int outer, long long n_t, long long n_lors)
{
    long long lor = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lor >= n_lors) return;
    double value = (double)y[lor];
    if (value == 0.0) return;
    double p0[3], p1[3];
    endpoints3d(trans, axial, outer, n_t, lor, p0, p1);
    Setup s = setup3d(shape, origin, vs, p0, p1);
    double v = value * s.weight;
    long long stride[3] = {(long long)shape[1] * shape[2], (long long)shape[2], 1};
    long long sk = stride[s.k], sa_ = stride[s.a], sb_ = stride[s.b];
    int na = shape[s.a], nb = shape[s.b];
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + i * s.sa, fb = s.cb + i * s.sb;
        double fla = floor(fa), flb = floor(fb);
        int ia = (int)fla, ib = (int)flb;
        double wa = fa - fla, wb = fb - flb;
        long long base = i * sk;
        bool a0 = ia >= 0 && ia < na, a1 = ia + 1 >= 0 && ia + 1 < na;
        bool b0 = ib >= 0 && ib < nb, b1 = ib + 1 >= 0 && ib + 1 < nb;
        if (a0 && b0) atomicAdd(&img[base + ia * sa_ + ib * sb_], (T)(v * (1.0 - wa) * (1.0 - wb)));
        if (a0 && b1) atomicAdd(&img[base + ia * sa_ + (ib + 1) * sb_], (T)(v * (1.0 - wa) * wb));
        if (a1 && b0) atomicAdd(&img[base + (ia + 1) * sa_ + ib * sb_], (T)(v * wa * (1.0 - wb)));
        if (a1 && b1) atomicAdd(&img[base + (ia + 1) * sa_ + (ib + 1) * sb_], (T)(v * wa * wb));
    }
}

// ------------------------------------------------------------------------------------------
// 2D
// ------------------------------------------------------------------------------------------
template <typename T>
__device__ void joseph2d_fwd(const T *img, T *out, const int *shape, const double *origin,
                             const double *vs, const double *trans, long long n_lors)
{
    long long lor = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lor >= n_lors) return;
    double p0[2] = {trans[4 * lor + 0], trans[4 * lor + 1]};
    double p1[2] = {trans[4 * lor + 2], trans[4 * lor + 3]};
    Setup s = setup2d(shape, origin, vs, p0, p1);
    long long stride[2] = {(long long)shape[1], 1};
    long long sk = stride[s.k], sa_ = stride[s.a];
    int na = shape[s.a];
    double acc = 0.0;
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + i * s.sa;
        double fla = floor(fa);
        int ia = (int)fla;
        double wa = fa - fla;
        long long base = i * sk;
        double v0 = (ia >= 0 && ia < na) ? (double)img[base + ia * sa_] : 0.0;
        double v1 = (ia + 1 >= 0 && ia + 1 < na) ? (double)img[base + (ia + 1) * sa_] : 0.0;
        acc += (1.0 - wa) * v0 + wa * v1;
    }
    out[lor] = (T)(acc * s.weight);
}

template <typename T>
__device__ void joseph2d_adj(const T *y, T *img, const int *shape, const double *origin,
                             const double *vs, const double *trans, long long n_lors)
{
    long long lor = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (lor >= n_lors) return;
    double value = (double)y[lor];
    if (value == 0.0) return;
    double p0[2] = {trans[4 * lor + 0], trans[4 * lor + 1]};
    double p1[2] = {trans[4 * lor + 2], trans[4 * lor + 3]};
    Setup s = setup2d(shape, origin, vs, p0, p1);
    double v = value * s.weight;
    long long stride[2] = {(long long)shape[1], 1};
    long long sk = stride[s.k], sa_ = stride[s.a];
    int na = shape[s.a];
    for (long long i = s.lo; i <= s.hi; ++i) {
        double fa = s.ca + i * s.sa;
        double fla = floor(fa);
        int ia = (int)fla;
        double wa = fa - fla;
        long long base = i * sk;
        if (ia >= 0 && ia < na) atomicAdd(&img[base + ia * sa_], (T)(v * (1.0 - wa)));
        if (ia + 1 >= 0 && ia + 1 < na) atomicAdd(&img[base + (ia + 1) * sa_], (T)(v * wa));
    }
}

// ------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------
#define PETTK_JOSEPH_ENTRIES(T, SUFFIX)                                                          \
    extern "C" __global__ void joseph3d_fwd_##SUFFIX(                                            \
        const T *img, T *out, const int *shape, const double *origin, const double *vs,         \
        const double *trans, const double *axial, int outer, long long n_t, long long n_lors)   \
    { joseph3d_fwd<T>(img, out, shape, origin, vs, trans, axial, outer, n_t, n_lors); }         \
    extern "C" __global__ void joseph3d_adj_##SUFFIX(                                            \
        const T *y, T *img, const int *shape, const double *origin, const double *vs,           \
        const double *trans, const double *axial, int outer, long long n_t, long long n_lors)   \
    { joseph3d_adj<T>(y, img, shape, origin, vs, trans, axial, outer, n_t, n_lors); }           \
    extern "C" __global__ void joseph2d_fwd_##SUFFIX(                                            \
        const T *img, T *out, const int *shape, const double *origin, const double *vs,         \
        const double *trans, long long n_lors)                                                   \
    { joseph2d_fwd<T>(img, out, shape, origin, vs, trans, n_lors); }                            \
    extern "C" __global__ void joseph2d_adj_##SUFFIX(                                            \
        const T *y, T *img, const int *shape, const double *origin, const double *vs,           \
        const double *trans, long long n_lors)                                                   \
    { joseph2d_adj<T>(y, img, shape, origin, vs, trans, n_lors); }

PETTK_JOSEPH_ENTRIES(float, f32)
PETTK_JOSEPH_ENTRIES(double, f64)
