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
        i = int(np.floor((self._y_center - xy[1]) / self.scaling))
        j = int(np.floor((xy[0] + self._x_center) / self.scaling))
        rows, cols = self.free.shape
        if 0 <= i < rows and 0 <= j < cols and self.free[i, j]:
            return i, j
        cells = self.free_cells()
        d = [np.linalg.norm(self.cell_center(c) - xy) for c in cells]
        return cells[int(np.argmin(d))]

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
        xy, goal = np.asarray(xy, np.float64), np.asarray(goal, np.float64)
        cell, goal_cell = self.cell_of(xy), self.cell_of(goal)
        if cell == goal_cell:
            return goal
        nxt = self.next_cell(cell, goal_cell)
        target = goal if nxt == goal_cell else self.cell_center(nxt)
        center = self.cell_center(cell)
        heading = (self.cell_center(nxt) - center) / self.scaling  # unit vector to the next cell
        offset = xy - center
        lateral = offset - offset.dot(heading) * heading
        if np.linalg.norm(lateral) > self.corner_margin:
            target = center + 0.5 * self.scaling * heading  # the middle of the opening
        return target

    def waypoints(self, xy: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """`waypoint` for a batch: xy [n, 2], goals [n, 2] -> [n, 2]."""
        return np.stack([self.waypoint(p, g) for p, g in zip(xy, goals)])

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
