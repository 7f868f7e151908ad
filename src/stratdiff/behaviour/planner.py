"""A waypoint planner over an AntMaze grid, as D4RL's AntMaze data collection used: a
breadth-first search over the free cells gives the shortest cell path to the goal, and the
goal-reaching ant is steered cell by cell along it.

Cells are (row, col) indices of the maze map (1 = wall, anything else free); cell centres
are in gymnasium-robotics' coordinates (`stratdiff.envs.MAZE_SCALING` units per cell, the
map centred on the origin, rows growing toward -y).

`MazePlanner.waypoint(xy, goal)` is the point the ant is sent toward:

- in the goal's cell: the goal itself;
- otherwise the centre of the next cell on the shortest path (the goal itself when that is
  the goal's cell), except when the ant is more than `corner_margin` off the line through
  its cell's centre in the direction of the next cell: then the middle of the opening into
  the next cell, so the ant lines up before a turn instead of cutting the corner into a wall.

`MazePlanner.waypoints(xy, goals)` computes the same for a batch with array operations (a
table of next cells per goal cell, built once), giving the same numbers as `waypoint` row
by row.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from stratdiff.envs import MAZE_SCALING

Cell = tuple[int, int]
_MOVES: tuple[Cell, ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left (fixed order)


class MazePlanner:
    """Shortest cell paths and waypoints in one maze (see the module docstring)."""

    def __init__(self, maze_map: list[list], scaling: float = MAZE_SCALING, corner_margin: float = 1.0):
        self.free = np.array([[cell != 1 for cell in row] for row in maze_map], dtype=bool)
        if self.free.ndim != 2 or not self.free.any():
            raise ValueError("maze_map must be a non-empty rectangular grid with a free cell")
        self.scaling = float(scaling)
        self.corner_margin = float(corner_margin)
        rows, cols = self.free.shape
        self._x_center = cols / 2 * self.scaling
        self._y_center = rows / 2 * self.scaling
        self._dist: dict[Cell, np.ndarray] = {}  # goal cell -> BFS distances (-1: unreachable)
        self._next: np.ndarray | None = None  # [goal row, goal col, row, col] -> next cell (-1: none)
        self._centers = np.array([[self.cell_center((i, j)) for j in range(cols)] for i in range(rows)])
        self._free_cells = np.argwhere(self.free)  # [m, 2], row-major order (free_cells)

    # ------------------------------------------------------------------ geometry
    def free_cells(self) -> list[Cell]:
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(self.free))]

    def cell_center(self, cell: Cell) -> np.ndarray:
        i, j = cell
        return np.array([(j + 0.5) * self.scaling - self._x_center,
                         self._y_center - (i + 0.5) * self.scaling])

    def cell_of(self, xy: np.ndarray) -> Cell:
        """The free cell holding `xy` (the nearest free cell centre when `xy` lies in a wall
        cell or outside the map)."""
        i, j = self.cells_of(np.asarray(xy, np.float64)[None])[0]
        return int(i), int(j)

    def cells_of(self, xy: np.ndarray) -> np.ndarray:
        """`cell_of` for a batch: xy [n, 2] -> (row, col) [n, 2]."""
        xy = np.asarray(xy, np.float64)
        cells = np.stack([np.floor((self._y_center - xy[:, 1]) / self.scaling),
                          np.floor((xy[:, 0] + self._x_center) / self.scaling)], axis=1)
        rows, cols = self.free.shape
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < rows) & (cells[:, 1] >= 0) & (cells[:, 1] < cols)
        cells = np.where(inside[:, None], cells, 0).astype(np.int64)
        off = ~(inside & self.free[cells[:, 0], cells[:, 1]])
        if off.any():  # in a wall or outside: the nearest free cell centre (the first of ties)
            free = self._free_cells
            d = np.linalg.norm(self._centers[free[:, 0], free[:, 1]][None] - xy[off][:, None], axis=-1)
            cells[off] = free[np.argmin(d, axis=1)]
        return cells

    # ------------------------------------------------------------------- search
    def distances(self, goal: Cell) -> np.ndarray:
        """Steps from every cell to `goal` along free cells ([rows, cols], -1: unreachable)."""
        goal = (int(goal[0]), int(goal[1]))
        if goal not in self._dist:
            if not self._is_free(goal):
                raise ValueError(f"goal cell {goal} is a wall or outside the maze")
            dist = np.full(self.free.shape, -1, dtype=np.int64)
            dist[goal] = 0
            queue = deque([goal])
            while queue:
                cell = queue.popleft()
                for nxt in self._neighbours(cell):
                    if dist[nxt] < 0:
                        dist[nxt] = dist[cell] + 1
                        queue.append(nxt)
            self._dist[goal] = dist
        return self._dist[goal]

    def next_cell(self, cell: Cell, goal: Cell) -> Cell:
        """The neighbour of `cell` one step closer to `goal` (`goal` when already there)."""
        dist = self.distances(goal)
        if tuple(cell) == tuple(goal):
            return tuple(goal)
        if dist[cell] < 0:
            raise ValueError(f"no path from cell {tuple(cell)} to cell {tuple(goal)}")
        return next(n for n in self._neighbours(cell) if dist[n] == dist[cell] - 1)

    def next_cells(self, cells: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """`next_cell` for a batch of free cells [n, 2] and goal cells [n, 2] -> [n, 2]."""
        if self._next is None:
            table = np.full(self.free.shape * 2 + (2,), -1, dtype=np.int64)
            for goal in self.free_cells():
                dist = self.distances(goal)
                for cell in self.free_cells():
                    if dist[cell] >= 0:
                        table[goal + cell] = self.next_cell(cell, goal)
            self._next = table
        out = self._next[goals[:, 0], goals[:, 1], cells[:, 0], cells[:, 1]]
        if (out < 0).any():
            k = int(np.flatnonzero(out[:, 0] < 0)[0])
            raise ValueError(f"no path from cell {tuple(map(int, cells[k]))} to cell {tuple(map(int, goals[k]))}")
        return out

    def path(self, start: Cell, goal: Cell) -> list[Cell]:
        """A shortest path of free cells from `start` to `goal`, both included."""
        if not self._is_free(start):
            raise ValueError(f"start cell {tuple(start)} is a wall or outside the maze")
        cells = [(int(start[0]), int(start[1]))]
        while cells[-1] != tuple(goal):
            cells.append(self.next_cell(cells[-1], goal))
        return cells

    # ----------------------------------------------------------------- steering
    def waypoint(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Where to send the ant at `xy` on its way to the point `goal` (module docstring)."""
        return self.waypoints(np.asarray(xy, np.float64)[None], np.asarray(goal, np.float64)[None])[0]

    def waypoints(self, xy: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """`waypoint` for a batch: xy [n, 2], goals [n, 2] -> [n, 2]."""
        xy, goals = np.asarray(xy, np.float64), np.asarray(goals, np.float64)
        cell, goal_cell = self.cells_of(xy), self.cells_of(goals)
        nxt = self.next_cells(cell, goal_cell)
        center, nxt_center = self._centers[cell[:, 0], cell[:, 1]], self._centers[nxt[:, 0], nxt[:, 1]]
        heading = (nxt_center - center) / self.scaling  # unit vector to the next cell
        offset = xy - center
        lateral = offset - (offset * heading).sum(axis=1, keepdims=True) * heading
        target = np.where((nxt == goal_cell).all(axis=1, keepdims=True), goals, nxt_center)
        aside = np.linalg.norm(lateral, axis=1, keepdims=True) > self.corner_margin
        target = np.where(aside, center + 0.5 * self.scaling * heading, target)  # the middle of the opening
        return np.where((cell == goal_cell).all(axis=1, keepdims=True), goals, target)

    # ------------------------------------------------------------------ helpers
    def _is_free(self, cell: Cell) -> bool:
        i, j = int(cell[0]), int(cell[1])
        rows, cols = self.free.shape
        return 0 <= i < rows and 0 <= j < cols and bool(self.free[i, j])

    def _neighbours(self, cell: Cell):
        for di, dj in _MOVES:
            nxt = (cell[0] + di, cell[1] + dj)
            if self._is_free(nxt):
                yield nxt
