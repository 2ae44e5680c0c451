// BaaS: the HTTP front ends of a node (admin API now; REST, auth, storage, realtime later).
import Kernel
