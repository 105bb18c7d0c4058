package org.pytorch.executorch;

/** Compile-only shim of org.pytorch.executorch.EValue (executorch-android 1.x) for tests; never shipped. */
public class EValue {
    private EValue() {
    }

    private static UnsupportedOperationException shim() {
        return new UnsupportedOperationException("compile-only shim");
    }

    public boolean isNone() { throw shim(); }
    public boolean isTensor() { throw shim(); }
    public boolean isBool() { throw shim(); }
    public boolean isInt() { throw shim(); }
    public boolean isDouble() { throw shim(); }
    public boolean isString() { throw shim(); }

    public static EValue optionalNone() { throw shim(); }
    public static EValue from(Tensor tensor) { throw shim(); }
    public static EValue from(boolean value) { throw shim(); }
    public static EValue from(long value) { throw shim(); }
    public static EValue from(double value) { throw shim(); }
    public static EValue from(String value) { throw shim(); }

    public Tensor toTensor() { throw shim(); }
    public boolean toBool() { throw shim(); }
    public long toInt() { throw shim(); }
    public double toDouble() { throw shim(); }
    public String toStr() { throw shim(); }

    public byte[] toByteArray() { throw shim(); }
    public static EValue fromByteArray(byte[] bytes) { throw shim(); }
}
