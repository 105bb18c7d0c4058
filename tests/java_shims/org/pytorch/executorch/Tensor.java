package org.pytorch.executorch;

import java.nio.ByteBuffer;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;

/**
 * Compile-only shim of org.pytorch.executorch.Tensor (executorch-android 1.x) for tests; never shipped. Members that
 * involve DType or MemoryFormat are left out.
 */
public abstract class Tensor {
    private Tensor() {
    }

    private static UnsupportedOperationException shim() {
        return new UnsupportedOperationException("compile-only shim");
    }

    public static ByteBuffer allocateByteBuffer(int numElements) { throw shim(); }
    public static IntBuffer allocateIntBuffer(int numElements) { throw shim(); }
    public static FloatBuffer allocateFloatBuffer(int numElements) { throw shim(); }
    public static LongBuffer allocateLongBuffer(int numElements) { throw shim(); }
    public static DoubleBuffer allocateDoubleBuffer(int numElements) { throw shim(); }

    public static Tensor fromBlobUnsigned(byte[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(byte[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(int[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(float[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(long[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(double[] data, long[] shape) { throw shim(); }
    public static Tensor fromBlobUnsigned(ByteBuffer data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(ByteBuffer data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(IntBuffer data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(FloatBuffer data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(LongBuffer data, long[] shape) { throw shim(); }
    public static Tensor fromBlob(DoubleBuffer data, long[] shape) { throw shim(); }

    public long numel() { throw shim(); }
    public static long numel(long[] shape) { throw shim(); }
    public long[] shape() { throw shim(); }

    public byte[] getDataAsByteArray() { throw shim(); }
    public byte[] getDataAsUnsignedByteArray() { throw shim(); }
    public int[] getDataAsIntArray() { throw shim(); }
    public float[] getDataAsFloatArray() { throw shim(); }
    public long[] getDataAsLongArray() { throw shim(); }
    public double[] getDataAsDoubleArray() { throw shim(); }

    public byte[] toByteArray() { throw shim(); }
    public static Tensor fromByteArray(byte[] bytes) { throw shim(); }
}
