package admission

// Typed binary heaps for the backlogged tenants of a class and the backlogged sessions of a
// tenant: container/heap's steps through its interface cost a dynamic call per comparison and
// swap on every dispatch. Same algorithm as container/heap (so the same order on ties).

func (h tenantHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if i == j || !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		j = i
	}
}

func (h tenantHeap) down(i0, n int) bool {
	i := i0
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && h.Less(j2, j1) {
			j = j2
		}
		if !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		i = j
	}
	return i > i0
}

func (h *tenantHeap) push(t *tenantQ) {
	t.idx = len(*h)
	*h = append(*h, t)
	h.up(len(*h) - 1)
}

func (h tenantHeap) fix(i int) {
	if !h.down(i, len(h)) {
		h.up(i)
	}
}

func (h *tenantHeap) remove(i int) {
	n := len(*h) - 1
	if n != i {
		h.Swap(i, n)
		if !h.down(i, n) {
			h.up(i)
		}
	}
	old := *h
	t := old[n]
	old[n] = nil
	*h = old[:n]
	t.idx = -1
}

func (h laneHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if i == j || !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		j = i
	}
}

func (h laneHeap) down(i0, n int) bool {
	i := i0
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && h.Less(j2, j1) {
			j = j2
		}
		if !h.Less(j, i) {
			break
		}
		h.Swap(i, j)
		i = j
	}
	return i > i0
}

func (h *laneHeap) push(l *laneQ) {
	l.idx = len(*h)
	*h = append(*h, l)
	h.up(len(*h) - 1)
}

func (h laneHeap) fix(i int) {
	if len(h) > 1 && !h.down(i, len(h)) {
		h.up(i)
	}
}

func (h *laneHeap) remove(i int) {
	n := len(*h) - 1
	if n != i {
		h.Swap(i, n)
		if !h.down(i, n) {
			h.up(i)
		}
	}
	old := *h
	l := old[n]
	old[n] = nil
	*h = old[:n]
	l.idx = -1
}
