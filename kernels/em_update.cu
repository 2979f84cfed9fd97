// Fused element-wise steps of the EM update x <- x * A^T(y / ybar) / sens, for CuPy RawModule.
//
// em_ratio:  out[i] = y[i] == 0 ? 0 : y[i] / max(ybar[i], eps)
// em_update: out[i] = (mask[i] && sens[i] > sens_floor) ? x[i] * back[i] / sens[i] : 0
//
// Same semantics and the same arithmetic as the numba kernels of pettk/backends/em_update.py:
// eps and sens_floor are doubles, the ratio is formed in double and rounded once to T, the update
// x * back / sens runs in T. em_update's out may alias x (in-place update: each thread reads its
// element before writing it), so x and out are not declared __restrict__. _f32 / _f64 entry
// points; one thread per element.

template <typename T>
__device__ void em_ratio(const T *__restrict__ y, const T *__restrict__ ybar, double eps, T *__restrict__ out,
                         long long n)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T yi = y[i];
    if (yi == (T)0) {
        out[i] = (T)0;
        return;
    }
    double b = (double)ybar[i];
    out[i] = (T)((double)yi / (b > eps ? b : eps));
}

template <typename T>
__device__ void em_update(const T *x, const T *__restrict__ back, const T *__restrict__ sens,
                          const bool *__restrict__ mask, double sens_floor, T *out, long long n)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    T s = sens[i];
    out[i] = ((double)s > sens_floor && mask[i]) ? x[i] * back[i] / s : (T)0;
}

#define PETTK_EM_ENTRIES(T, SUFFIX)                                                              \
    extern "C" __global__ void em_ratio_##SUFFIX(const T *__restrict__ y, const T *__restrict__ ybar, \
                                                 double eps, T *__restrict__ out, long long n)   \
    {                                                                                            \
        em_ratio<T>(y, ybar, eps, out, n);                                                      \
    }                                                                                            \
    extern "C" __global__ void em_update_##SUFFIX(const T *x, const T *__restrict__ back,       \
                                                  const T *__restrict__ sens,                   \
                                                  const bool *__restrict__ mask, double sens_floor, \
                                                  T *out, long long n)                           \
    {                                                                                            \
        em_update<T>(x, back, sens, mask, sens_floor, out, n);                                  \
    }

PETTK_EM_ENTRIES(float, f32)
PETTK_EM_ENTRIES(double, f64)
