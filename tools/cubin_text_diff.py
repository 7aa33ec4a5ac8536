#!/usr/bin/env python3
"""Compares the kernels' code (.text sections) of two cubins, section by section.

   tools/cubin_text_diff.py OLD.cubin NEW.cubin

Build each with `nvcc ... -cubin` from the same file name (the anonymous namespace's hash comes
from it). Kernel names are normalised: the anonymous namespace, a trailing `false` template
argument added since (ILi128ELb1ELb0ELb0E -> ILi128ELb1ELb0E), an added tma::Map parameter, a
trailing int argument 1 (ELi1E) removed since. Prints
`same` or `DIFF` per kernel with both sizes; how the SSD notes show that a change left the
measured kernels byte-identical.
"""
import subprocess,re,sys
def secs(f):
    out=subprocess.run(['readelf','-S','-W',f],capture_output=True,text=True).stdout
    d={}
    for l in out.splitlines():
        m=re.search(r'\]\s+(\.text\.\S+)\s+\S+\s+\S+\s+(\S+)\s+(\S+)',l)
        if m: d[m.group(1)]=(int(m.group(2),16),int(m.group(3),16))
    data=open(f,'rb').read()
    r={}
    for k,(o,s) in d.items():
        k=re.sub(r'_GLOBAL__N__\w+?_cu_[0-9a-f]+_\d+','ANON',k)
        k=re.sub(r'(ILi\d+(?:ELb\d){2})ELb0(EEEv)',r'\1\2',k)
        k=k.replace('NS0_3tma3MapE','')
        k=k.replace('ELi1EEEv','EEEv')  # a trailing default int argument (1) removed since
        r[k]=data[o:o+s]
    return r
a=secs(sys.argv[1]); b=secs(sys.argv[2])
for k in sorted(set(a)|set(b)):
    print(('same ' if a.get(k)==b.get(k) else 'DIFF ')+k[-70:], len(a.get(k,b'')), len(b.get(k,b'')))
