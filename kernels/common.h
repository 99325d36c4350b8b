/* Helpers shared by every stage template (included once at the top of a generated source). */
#ifndef CNNFPGA_COMMON_H
#define CNNFPGA_COMMON_H

/* Horizontal sums of the CI-wide partial products; the code generator picks HSUM<CI>. */
#define HSUM1(v) (v)
#define HSUM2(v) ((v).s0 + (v).s1)
#define HSUM4(v) (HSUM2((v).lo) + HSUM2((v).hi))
#define HSUM8(v) (HSUM4((v).lo) + HSUM4((v).hi))
#define HSUM16(v) (HSUM8((v).lo) + HSUM8((v).hi))

/* A one-wide "vector" load, so that CI = 1 needs no special case in the templates. */
#define VLOAD1(i, p) ((p)[i])

/* Caffe's (leaky) ReLU on one value. */
#define RELU_SCALAR(v, slope) ((v) > 0.0f ? (v) : (v) * (slope))

#endif
