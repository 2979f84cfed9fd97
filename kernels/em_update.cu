// Fused element-wise steps of the EM update x <- x * A^T(y / ybar) / sens, for CuPy RawModule.
//
// em_ratio:  out[i] = y[i] == 0 ? 0 : y[i] / max(ybar[i], eps)
// em_update: out[i] = (mask[i] && sens[i] > sens_floor) ? x[i] * back[i] / sens[i] : 0
// (out may alias x). Same semantics as pettk/backends/em_update.py; _f32 / _f64 entry points.

template <typename T>
__device__ void em_ratio(const T *y, const T *ybar, T eps, T *out, long long n)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T yi = y[i];
    T b = ybar[i] > eps ? ybar[i] : eps;
    out[i] = yi == (T)0 ? (T)0 : yi / b;
}

template <typename T>
__device__ void em_update(const T *x, const T *back, const T *sens, const bool *mask, T sens_floor,
                          T *out, long long n)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T s = sens[i];
    out[i] = (mask[i] && s > sens_floor) ? x[i] * back[i] / s : (T)0;
}

#define PETTK_EM_ENTRIES(T, SUFFIX)                                                               \
    extern "C" __global__ void em_ratio_##SUFFIX(const T *y, const T *ybar, T eps, T *out,        \
                                                  long long n)                                     \
    { em_ratio<T>(y, ybar, eps, out, n); }                                                        \
    extern "C" __global__ void em_update_##SUFFIX(const T *x, const T *back, const T *sens,       \
                                                   const bool *mask, T sens_floor, T *out,         \
                                                   long long n)                                    \
    { em_update<T>(x, back, sens, mask, sens_floor, out, n); }

PETTK_EM_ENTRIES(float, f32)
PETTK_EM_ENTRIES(double, f64)
