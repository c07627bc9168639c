<div class="actions">
  <form method="post" action="/jobs/{{job['id']}}/run">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn btn-primary" title="Run {{job['id']}} now">Run</button>
  </form>
  % if job['state'] == 'paused':
  <form method="post" action="/jobs/{{job['id']}}/resume">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn" title="Resume {{job['id']}}">Resume</button>
  </form>
  % elif job['state'] == 'scheduled':
  <form method="post" action="/jobs/{{job['id']}}/pause">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <button type="submit" class="btn" title="Pause {{job['id']}}">Pause</button>
  </form>
  % end
</div>
